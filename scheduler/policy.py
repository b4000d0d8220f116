"""What a message class allows: its send window and its frequency cap, from settings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from loa.errors import InvalidInput
from loa.settings import Settings
from scheduler.windows import SendWindow, parse_window

MESSAGE_CLASSES = ("qc", "info", "care")
# Classes whose messages need the recipient's recorded consent (advertising, Decree 91/2020),
# when LOA_QC_REQUIRES_CONSENT is on; and the error code of a message suppressed for lack of it.
CONSENT_CLASSES = frozenset({"qc"})
NO_CONSENT = "no_consent"
_CAP = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*([mhd])\s*")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class Cap:
    """At most `count` messages of a class to one recipient in any rolling `period`."""

    count: int
    period: timedelta


def parse_cap(text: str) -> Cap | None:
    """ "3/24h", "1/7d", "10/90m"; "" for no cap."""
    if not text.strip():
        return None
    match = _CAP.fullmatch(text)
    if match is None:
        raise InvalidInput(f"cap {text!r} is not like '3/24h' (a count, /, a period in m, h or d)")
    count, amount, unit = int(match[1]), int(match[2]), match[3]
    if count == 0 or amount == 0:
        raise InvalidInput(
            f"cap {text!r} would never let a message through; leave it empty for none"
        )
    return Cap(count, timedelta(**{_UNITS[unit]: amount}))


def window_for(message_class: str, settings: Settings) -> SendWindow | None:
    windows = {
        "qc": settings.window_qc,
        "info": settings.window_info,
        "care": settings.window_care,
    }
    return parse_window(windows[message_class])


def cap_for(message_class: str, settings: Settings) -> Cap | None:
    caps = {"qc": settings.cap_qc, "info": settings.cap_info, "care": settings.cap_care}
    return parse_cap(caps[message_class])


def needs_consent(message_class: str, settings: Settings) -> bool:
    """Whether a message of this class goes only to numbers with recorded consent."""
    return settings.qc_requires_consent and message_class in CONSENT_CLASSES
