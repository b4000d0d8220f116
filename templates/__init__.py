"""Message templates and SMS text: rendering now; encoding and segments to come."""
