"""When a wave fires: from a trigger written in the campaign's local time to an instant in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from loa.errors import InvalidInput, NotBuilt
from scheduler.spec import parse_local


def localize(local: datetime, zone: ZoneInfo) -> datetime:
    """A wall-clock time in `zone` as UTC.

    A time that does not exist (skipped by a DST change) is refused rather than silently moved;
    a time that exists twice (clocks set back) means the first of the two.
    """
    aware = local.replace(tzinfo=zone, fold=0)
    as_utc = aware.astimezone(UTC)
    if as_utc.astimezone(zone).replace(tzinfo=None) != local:
        raise InvalidInput(f"{local:%Y-%m-%d %H:%M} does not exist in {zone.key} (clocks skip it)")
    return as_utc


def first_fire_time(trigger: dict[str, Any], zone: ZoneInfo) -> datetime:
    if "at" in trigger:
        return localize(parse_local(trigger["at"]), zone)
    kind = next(iter(trigger), "?")
    raise NotBuilt(f"{kind!r} triggers are not built yet; only 'at' waves can be launched")
