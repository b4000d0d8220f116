"""The clock is injected everywhere a decision depends on time, so tests can move time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

Clock = Callable[[], datetime]

# The dates Loa takes from outside (specs, reports, filters, lists): wide enough for any record or
# plan, and far enough inside Python's calendar (years 1 to 9999) that moving a time between zones
# or adding days to it cannot leave it.
EARLIEST = date(1900, 1, 1)
LATEST = date(2999, 12, 31)


def out_of_range(value: date | datetime) -> str | None:
    """Why `value` is not a date Loa takes, or None when it is one."""
    day = value.date() if isinstance(value, datetime) else value
    if EARLIEST <= day <= LATEST:
        return None
    return f"{value.isoformat()} is not between {EARLIEST} and {LATEST}"


def system_clock() -> datetime:
    return datetime.now(UTC)
