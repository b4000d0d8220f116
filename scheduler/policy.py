"""What a message class allows: its send window (and, to come, its frequency cap), from settings."""

from __future__ import annotations

from loa.settings import Settings
from scheduler.windows import SendWindow, parse_window

MESSAGE_CLASSES = ("qc", "info", "care")


def window_for(message_class: str, settings: Settings) -> SendWindow | None:
    windows = {
        "qc": settings.window_qc,
        "info": settings.window_info,
        "care": settings.window_care,
    }
    return parse_window(windows[message_class])
