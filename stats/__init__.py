"""Delivery statistics read from the outbox (per campaign, wave and status)."""
