"""Channel adapters behind one protocol (channels.base). They know messages, never campaigns."""
