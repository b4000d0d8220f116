"""Send windows: the local hours in which a message class may be sent (Decree 91/2020: advertising
only 07:00-22:00), and when a closed window next opens or an open one closes.

One definition carries everything: a window is open at an instant exactly when the campaign
zone's wall clock at that instant reads a time in [start, end). Quiet hours are about the
recipient's clock, and a delivery log in UTC can be audited against this rule by anyone. The
DST rules follow from it rather than being special cases:

- a start time skipped by a spring-forward gap opens the window at the first instant after the gap
  (the clock jumps past the start);
- a start time that happens twice (fall back) opens the window at the first of the two; the clock
  then reads times before the start again for the repeated stretch, so the window is closed there
  and opens once more at the second occurrence. The same holds in mirror image for an end time
  that happens twice. That hole is deliberate: sending while the clock reads a time outside the
  window would break the rule the window exists for.

Pure functions: instants are arguments (no clock), results are aware datetimes in UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from loa.errors import InvalidInput

# How far past the instant's local date the search looks. Any window that is not empty opens
# (and closes) within every local day except where a DST gap or a skipped day swallows it, which
# real zones never do two days running; four days is a wide margin and keeps the search bounded.
_SEARCH_DAYS = 4

_TIME = r"(\d{1,2}):(\d{2})(?::(\d{2}))?"
# An en dash is accepted too: Vietnamese documents often write "07:00–22:00".
_WINDOW = re.compile(rf"{_TIME}\s*[-–]\s*{_TIME}", re.ASCII)


@dataclass(frozen=True)
class SendWindow:
    """Local wall-clock hours: `start` inclusive, `end` exclusive. `start > end` crosses midnight
    (20:00-06:00 is open in the evening and in the early morning)."""

    start: time
    end: time

    def __post_init__(self) -> None:
        # Checked here as well as in parse_window so that a window built in code cannot make
        # next_open search for an opening that never comes.
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise InvalidInput(
                f"send window {self}: give local times without a zone; "
                "the campaign's time zone applies"
            )
        if self.start == self.end:
            raise InvalidInput(
                f"send window {self} never opens: start and end are the same time "
                "(for no restriction use 'always')"
            )

    def __str__(self) -> str:
        return f"{_format(self.start)}-{_format(self.end)}"

    def contains(self, local: time) -> bool:
        """Whether a wall-clock reading falls inside the window."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


def _format(value: time) -> str:
    return value.isoformat(timespec="seconds" if value.second or value.microsecond else "minutes")


def parse_window(text: str) -> SendWindow | None:
    """`07:00-22:00`, `7:00-22:00` or `07:00:00-21:59:59` as a window; `always` or an empty text
    as no window (None). A window ending at midnight is written with end 00:00."""
    cleaned = text.strip()
    if cleaned == "" or cleaned.lower() == "always":
        return None
    match = _WINDOW.fullmatch(cleaned)
    if match is None:
        raise InvalidInput(
            f"send window {text!r} is not in the form HH:MM-HH:MM "
            "(e.g. '07:00-22:00', seconds allowed, or 'always')"
        )
    parts = match.groups()
    start = _time_of(text, parts[0:3])
    end = _time_of(text, parts[3:6])
    if start == end:
        raise InvalidInput(
            f"send window {text!r} never opens: start and end are the same time "
            "(for no restriction use 'always')"
        )
    return SendWindow(start, end)


def _time_of(text: str, parts: tuple[str | None, ...]) -> time:
    hour, minute = int(parts[0] or 0), int(parts[1] or 0)
    second = int(parts[2] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise InvalidInput(
            f"send window {text!r}: {':'.join(p for p in parts if p is not None)} is not a time "
            "of day (hours 0-23, minutes and seconds 0-59; a window ending at midnight ends 00:00)"
        )
    return time(hour, minute, second)


def _require_aware(instant: datetime) -> None:
    # A naive datetime has no defined instant; guessing UTC or local here is how quiet hours break.
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise InvalidInput(
            f"instant {instant.isoformat()} has no time zone; give an aware datetime"
        )


def _wall(instant: datetime, zone: ZoneInfo) -> time:
    return instant.astimezone(zone).time()


def is_open(instant: datetime, window: SendWindow | None, zone: ZoneInfo) -> bool:
    """Whether a message may be sent at `instant` (aware) under `window` in `zone`."""
    _require_aware(instant)
    if window is None:
        return True
    return window.contains(_wall(instant, zone))


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always gives one
    return offset


def _transition_between(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The first instant after `low`, up to `high`, whose UTC offset is `high`'s. Called where
    the offsets of `low` and `high` differ, so the zone changed offset in between."""
    target = _offset(high, zone)
    # Bisection to the microsecond. The span is at most a DST shift (an hour or two); 64 halvings
    # would cover half a million years, so the bound never cuts an answer short.
    for _ in range(64):
        if high - low <= timedelta(microseconds=1):
            break
        middle = low + (high - low) / 2
        if _offset(middle, zone) == target:
            high = middle
        else:
            low = middle
    return high


def _crossings(local_date: date, at: time, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants at which the wall clock in `zone` reaches `at` on `local_date`, plus,
    when that time is skipped or repeated, the instant the zone changes offset around it.

    Outside DST changes the two folds give one instant. In a gap they give two instants on
    either side of the change (neither shows `at` on the clock) and the change itself is where the
    clock jumps past `at`. In a repeated stretch they are the two real occurrences, and the change
    between them is where the clock jumps back across `at`.
    """
    naive = datetime.combine(local_date, at)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    low, high = min(first, second), max(first, second)
    return [first, second, _transition_between(low, high, zone)]


def _candidates(instant: datetime, window: SendWindow, zone: ZoneInfo) -> list[datetime]:
    """Every instant after `instant`, within the search horizon, at which the window can change
    from closed to open or back: the wall clock reaches start or end, or the zone changes offset
    across one of them. Between two candidates the open/closed state cannot change, so the
    earliest candidate with the wanted state is the exact answer, not an approximation."""
    local_date = instant.astimezone(zone).date()
    found: set[datetime] = set()
    # From the day before: near midnight, and around changes of offset, the local date of a
    # crossing and the local date of `instant` can differ.
    for days in range(-1, _SEARCH_DAYS + 1):
        day = local_date + timedelta(days=days)
        for at in (window.start, window.end):
            found.update(_crossings(day, at, zone))
    return sorted(moment for moment in found if moment > instant)


def next_open(instant: datetime, window: SendWindow | None, zone: ZoneInfo) -> datetime:
    """The earliest instant at or after `instant` at which the window is open, in UTC: `instant`
    itself when it is open already or when there is no window."""
    _require_aware(instant)
    here = instant.astimezone(UTC)
    if window is None or window.contains(_wall(here, zone)):
        return here
    for candidate in _candidates(here, window, zone):
        if window.contains(_wall(candidate, zone)):
            return candidate
    # Unreachable for a window SendWindow accepted; failing loudly beats waiting forever.
    raise InvalidInput(
        f"send window {window} does not open within {_SEARCH_DAYS} days after "
        f"{here.isoformat()} in {zone.key}"
    )


def window_closes(instant: datetime, window: SendWindow | None, zone: ZoneInfo) -> datetime | None:
    """The instant, in UTC, at which the window open at `instant` closes: a dispatcher may keep
    sending while the time is before it. None when there is no window (it never closes). When
    the window is closed at `instant` the answer is `instant` itself, so "send until it closes"
    sends nothing rather than needing a separate check."""
    _require_aware(instant)
    if window is None:
        return None
    here = instant.astimezone(UTC)
    if not window.contains(_wall(here, zone)):
        return here
    for candidate in _candidates(here, window, zone):
        if not window.contains(_wall(candidate, zone)):
            return candidate
    raise InvalidInput(
        f"send window {window} does not close within {_SEARCH_DAYS} days after "
        f"{here.isoformat()} in {zone.key}"
    )
