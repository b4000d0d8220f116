"""When waves fire: triggers written in the campaign's local time, turned into instants in UTC.

Three kinds, as in the spec:
- `at`: one local date-time;
- `recurring`: given local times on every day (or on given weekdays) between two dates;
- `relative`: an offset from a date attribute of each recipient (card_expiry -7 days at 09:00).

Pure functions over explicit instants and zones; no clock.

The occurrences of a recurring wave are enumerated here rather than by APScheduler's
CronTrigger: in 3.11 CronTrigger fires twice at a time repeated by a fall-back change and yields
a local time that does not exist in a spring-forward gap (tests/test_triggers.py shows both). A
campaign must fire once per occurrence, and a time that does not exist is refused when the
campaign is created, so the rule here is simple: each listed local time on each chosen date, the
first of two when the clock repeats it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from loa.clock import out_of_range
from loa.errors import InvalidInput

# Monday is 0, as in date.weekday(). English names, and the Vietnamese short forms (t2 is "thứ
# hai", Monday; cn is "chủ nhật", Sunday).
WEEKDAYS: dict[str, int] = {
    **{name: i for i, name in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))},
    **{
        name: i
        for i, name in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
    **{f"t{n}": n - 2 for n in range(2, 8)},
    "cn": 6,
}
_OFFSET = re.compile(r"([+-]?)\s*(\d+)\s*([mhd])", re.ASCII)
_OFFSET_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
# Ten years either way: more is a typo, and would leave the calendar when added to a date.
MAX_OFFSET = timedelta(days=3660)
_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", re.ASCII)


def parse_local(value: str) -> datetime:
    """`2026-05-08 07:30` (or ISO with a T) as a naive local date-time."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a local date-time like '2026-05-08 07:30'") from None
    if parsed.tzinfo is not None:
        raise ValueError(
            f"{value!r}: give local time without an offset; the campaign has a time zone"
        )
    if problem := out_of_range(parsed):
        raise ValueError(problem)
    return parsed


def parse_date(value: str) -> date:
    try:
        parsed = date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a date like '2026-05-31'") from None
    if problem := out_of_range(parsed):
        raise ValueError(problem)
    return parsed


def parse_time(value: str) -> time:
    match = _TIME.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a local time like '06:00'")
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"{value!r} is not a time of day (hours 0-23, minutes 0-59)")
    return time(hour, minute, second)


def parse_weekday(value: str) -> int:
    key = value.strip().lower()
    if key not in WEEKDAYS:
        raise ValueError(f"{value!r} is not a weekday (mon..sun, or t2..t7 and cn)")
    return WEEKDAYS[key]


def parse_offset(value: str) -> timedelta:
    """`-7d`, `+2h`, `30m`, `0d`."""
    match = _OFFSET.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not an offset like '-7d', '+2h' or '30m'")
    amount = int(match[2]) * (-1 if match[1] == "-" else 1)
    if abs(amount) * _UNIT_SECONDS[match[3]] > MAX_OFFSET.total_seconds():
        raise ValueError(f"{value!r} is more than {MAX_OFFSET.days} days")
    return timedelta(**{_OFFSET_UNITS[match[3]]: amount})


def localize(local: datetime, zone: ZoneInfo) -> datetime:
    """A wall-clock time in `zone` as UTC.

    A time that does not exist (skipped by a DST change) is refused rather than silently moved;
    a time that exists twice (clocks set back) means the first of the two.
    """
    as_utc = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if as_utc.astimezone(zone).replace(tzinfo=None) != local:
        raise InvalidInput(f"{local:%Y-%m-%d %H:%M} does not exist in {zone.key} (clocks skip it)")
    return as_utc


def localize_forward(local: datetime, zone: ZoneInfo) -> datetime:
    """As `localize`, but a time inside a spring-forward gap becomes the instant as far past the
    gap's start as the time is (02:30 in a 02:00-03:00 gap is 03:30): used where refusing is not
    possible because the dates come from data, not from the spec."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


@dataclass(frozen=True)
class Recurring:
    """`times` on every date from `start` to `end` (inclusive), or only on `weekdays`."""

    start: date
    end: date
    times: tuple[time, ...]
    weekdays: frozenset[int] | None = None

    def local_occurrences(self, since: date | None = None) -> Iterator[datetime]:
        """Every occurrence as a naive local date-time, in order, from `since` (a local date)."""
        day = max(self.start, since) if since else self.start
        while day <= self.end:
            if self.weekdays is None or day.weekday() in self.weekdays:
                for at in self.times:
                    yield datetime.combine(day, at)
            day += timedelta(days=1)

    def next_at_or_after(self, instant: datetime, zone: ZoneInfo) -> datetime | None:
        """The first occurrence (UTC) at or after `instant`; None when none is left."""
        since = instant.astimezone(zone).date() - timedelta(days=1)
        for local in self.local_occurrences(since):
            fire = localize_forward(local, zone)
            if fire >= instant:
                return fire
        return None

    def check(self, zone: ZoneInfo) -> int:
        """Raise InvalidInput for a time that does not exist on one of the dates (a DST gap) or
        a schedule that never fires; return the number of occurrences."""
        count = 0
        for local in self.local_occurrences():
            try:
                localize(local, zone)
            except InvalidInput as exc:
                raise InvalidInput(f"field recurring.times: {exc.message}") from None
            count += 1
        if not count:
            raise InvalidInput(
                f"field recurring: no chosen weekday falls between {self.start} and {self.end}, "
                "so the wave would never fire"
            )
        return count


@dataclass(frozen=True)
class Relative:
    """Fire at `offset` from each recipient's `attribute` date; with `at`, at that local time of
    the shifted date (offsets in whole days only). Dates after `until` make no occurrence."""

    attribute: str
    offset: timedelta
    at: time | None = None
    until: date | None = None

    def fire_time(self, value: date, zone: ZoneInfo) -> datetime:
        """The instant (UTC) at which recipients whose date is `value` are messaged."""
        if self.at is not None:
            local = datetime.combine(value + timedelta(days=self.offset.days), self.at)
        else:
            local = datetime.combine(value, time()) + self.offset
        return localize_forward(local, zone)

    def last_date_due(self, instant: datetime, zone: ZoneInfo) -> date:
        """The latest date whose fire time is at or before `instant`. Fire times grow with the
        date, so the answer is found from an estimate with a step or two either way."""
        shift = self.offset if self.at is None else timedelta(days=self.offset.days)
        guess = (instant.astimezone(zone).replace(tzinfo=None) - shift).date()
        while self.fire_time(guess, zone) > instant:
            guess -= timedelta(days=1)
        while self.fire_time(guess + timedelta(days=1), zone) <= instant:
            guess += timedelta(days=1)
        return guess


Trigger = datetime | Recurring | Relative


def trigger_of(trigger: dict[str, Any]) -> Trigger:
    """The stored trigger ({"at": ...}, {"recurring": {...}} or {"relative": {...}}) as an object:
    a naive local datetime for `at`."""
    if "at" in trigger:
        return parse_local(trigger["at"])
    if "recurring" in trigger:
        spec = trigger["recurring"]
        return Recurring(
            start=parse_date(spec["from"]),
            end=parse_date(spec["to"]),
            times=tuple(sorted({parse_time(t) for t in spec["times"]})),
            weekdays=(
                frozenset(parse_weekday(w) for w in spec["weekdays"])
                if spec.get("weekdays")
                else None
            ),
        )
    if "relative" in trigger:
        spec = trigger["relative"]
        return Relative(
            attribute=spec["attribute"],
            offset=parse_offset(spec["offset"]),
            at=parse_time(spec["at"]) if spec.get("at") else None,
            until=parse_date(spec["until"]) if spec.get("until") else None,
        )
    raise InvalidInput(f"unknown trigger {sorted(trigger)}; give at, recurring or relative")


def check_trigger(trigger: dict[str, Any], zone: ZoneInfo) -> None:
    """Refuse, at creation, a trigger that cannot fire as written, naming the field."""
    parsed = trigger_of(trigger)
    if isinstance(parsed, datetime):
        try:
            localize(parsed, zone)
        except InvalidInput as exc:
            raise InvalidInput(f"field at: {exc.message}") from None
    elif isinstance(parsed, Recurring):
        parsed.check(zone)


def occurrence_key(local: datetime) -> str:
    """How an occurrence of a recurring wave is named: its local date-time."""
    return local.isoformat(timespec="minutes" if local.second == 0 else "seconds")
