"""The HTTP API (FastAPI): a thin shell over the same service functions the CLI calls."""
