"""Logging, configured once per process by the CLI: readable lines for a console, or JSON lines
for a log collector (LOA_LOG_FORMAT=json).

A JSON line has `timestamp` (UTC, ISO 8601), `level`, `logger` and `message`, and every field
the code passed with `extra=`: the dispatcher, reconciliation, the webhooks and the scheduler's
tick pass the ids of what a record is about (message_id, wave_id, campaign_id, worker_id,
adapter, ...), so that a collector can follow one message or one wave across processes.
"""

from __future__ import annotations

import logging
from typing import TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from loa.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one to `stream` (stderr by default) in the
    configured format. Returns the handler."""
    handler = logging.StreamHandler(stream)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                ["levelname", "name", "message"],
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp=True,
                # uvicorn adds its message again with terminal colour codes.
                reserved_attrs=[*RESERVED_ATTRS, "color_message"],
                # Vietnamese names and texts stay readable in the collector.
                json_ensure_ascii=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Both log every routine step at INFO (each scheduler tick, each migration context).
    for noisy in ("apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
