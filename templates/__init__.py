"""Message templates and SMS text: rendering, GSM-7/UCS-2 encoding and segments, unaccent."""
