"""Delivery statistics from the rollups (kept by database triggers: migrations 0011 and 0016).

Nothing here reads the outbox or the delivery events: a query aggregates rollup rows, joined with
the small wave and area tables. Its cost follows the number of rollup rows read, bounded by the
waves, communes, carriers and statuses there are, not by the number of messages or events. Three
rollups, and the smallest that can answer a question answers it (_table):
- stats_rollup_wave (wave x channel x carrier x adapter x status x error code x UTC hour): every
  question with neither an area to group or filter by;
- stats_rollup_area (commune x channel x status x error code x carrier x adapter x message class:
  no wave, no time): a question by area with no campaign, wave or day to group or filter by.
  Its size does not grow with the waves sent or the days gone by;
- stats_rollup (wave x channel x commune x carrier x adapter x status x error code x UTC hour):
  the rest, by area with a campaign or wave (read by the waves' range of its primary key) or
  days (read by the communes' hours, ix_stats_rollup_area_hour).

What the measures count, from each message's current status (a message is in exactly one):
- targeted:   every message of the waves (all statuses): the people the waves were for. SMS
              only: a loudspeaker wave is not in the outbox and reaches a commune, not a list of
              people; its slots scheduled are not counted anywhere (the rollup holds plays
              reported), and adding them here would add communes x slots to people;
- pending:    planned, claimed, sending: not decided yet;
- sent:       sent, delivered, undelivered: a provider accepted it (whatever came of it after);
- delivered:  delivered (the provider's report says so);
- failed:     failed, undelivered: it did not reach the person after a try (refused by the
              provider or the adapter, given up after retries, or reported undeliverable), so an
              undelivered message counts in both sent and failed;
- expired, suppressed, cancelled, unknown: those statuses;
- delivery_rate: delivered / sent (None when nothing was sent);
- segments:   the SMS segments of the messages handed to a provider (recorded at `sending`);
- cost:       those segments priced per adapter, carrier and message class (LOA_SMS_PRICES, else
              LOA_SMS_PRICE_PER_SEGMENT; unpriced segments cost 0): what was handed over, an upper
              bound of the bill, as a provider may not charge what it refused;
- plays:      loudspeaker plays reported as played (skipped and failed plays are not counted).

Days are local days of `timezone`, made from the rollup's UTC hours. In a zone whose offset is
not whole hours (India +05:30, Nepal +05:45) an hour bucket straddles local midnight, and the
whole bucket counts on the day its first minute falls on.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from loa.clock import out_of_range
from loa.errors import InvalidInput
from loa.models import (
    Area,
    AreaLevel,
    Campaign,
    MessageStatus,
    StatsRollup,
    StatsRollupArea,
    StatsRollupWave,
    Wave,
)
from loa.settings import Settings
from scheduler.pricing import ANY, PriceRule, price_rules

GROUPS: Final = (
    "campaign",
    "wave",
    "channel",
    "province",
    "district",
    "commune",
    "day",
    "carrier",
    "error_code",
    "adapter",
)
AREA_GROUPS: Final = ("province", "district", "commune")
LOUDSPEAKER: Final = "loudspeaker"  # the rollup's channel for plays (migration 0011)
_S = MessageStatus
# Each measure: the message statuses it counts (see the module's docstring).
STATUS_MEASURES: Final[dict[str, tuple[str, ...]]] = {
    "targeted": tuple(s.value for s in MessageStatus),
    "pending": (_S.PLANNED, _S.CLAIMED, _S.SENDING),
    "sent": (_S.SENT, _S.DELIVERED, _S.UNDELIVERED),
    "delivered": (_S.DELIVERED,),
    "failed": (_S.FAILED, _S.UNDELIVERED),
    "expired": (_S.EXPIRED,),
    "suppressed": (_S.SUPPRESSED,),
    "cancelled": (_S.CANCELLED,),
    "unknown": (_S.UNKNOWN,),
}
# status -> the measures that count it
_MEASURES_OF: Final = {
    status: tuple(m for m, statuses in STATUS_MEASURES.items() if status in statuses)
    for status in STATUS_MEASURES["targeted"]
}
MINUTES_PER_DAY: Final = 24 * 60
EPOCH: Final = date(1970, 1, 1)

R = StatsRollup.__table__  # type: ignore[attr-defined]
R_WAVE = StatsRollupWave.__table__  # type: ignore[attr-defined]
R_AREA = StatsRollupArea.__table__  # type: ignore[attr-defined]


class StatsRow(BaseModel):
    """One group: its key (one entry per group_by, with names beside codes and ids: campaign_name,
    wave_name, province_name, district_name, commune_name), and its measures."""

    key: dict[str, str | int | None]
    targeted: int = 0
    pending: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    expired: int = 0
    suppressed: int = 0
    cancelled: int = 0
    unknown: int = 0
    segments: int = 0
    cost: float = 0.0
    delivery_rate: float | None = None
    plays: int = 0


@dataclass(frozen=True)
class _Query:
    """The checked arguments of query_stats."""

    group_by: tuple[str, ...]
    zone: ZoneInfo
    hours: tuple[int | None, int | None]  # [first, end) UTC hours of the day range


def query_stats(
    session: Session,
    *,
    group_by: Sequence[str],
    campaign_id: int | None = None,
    wave_id: int | None = None,
    channel: str | None = None,
    area_code: str | None = None,
    day_from: date | None = None,
    day_to: date | None = None,
    timezone: str,
    prices: Settings,
) -> list[StatsRow]:
    """Statistics grouped by `group_by` (GROUPS; none: one row for everything), for the filters
    given. `wave_id` is a wave of the spec (its occurrences count under it) or one occurrence;
    `area_code` an area at any level (the communes under it); days are local to `timezone`,
    both ends included. `prices`: the settings whose LOA_SMS_PRICES price the segments. Raises
    InvalidInput naming the field for an unknown group, time zone or area, or a reversed range."""
    query = _check(group_by, day_from, day_to, timezone)
    stmt = _aggregate(session, query, prices, campaign_id, wave_id, channel, area_code)
    result = session.execute(stmt)
    columns = list(result.keys())
    return _named(session, _fold(result.all(), columns, query), query.group_by)


def _check(
    group_by: Sequence[str],
    day_from: date | None,
    day_to: date | None,
    timezone: str,
) -> _Query:
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise InvalidInput(
            f"cannot group by {', '.join(map(repr, unknown))}; use any of {', '.join(GROUPS)}",
            field="group_by",
        )
    try:
        zone = ZoneInfo(timezone)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        raise InvalidInput(
            f"time zone {timezone!r} is not an IANA zone name (e.g. Asia/Ho_Chi_Minh)",
            field="timezone",
        ) from None
    for name, day in (("day_from", day_from), ("day_to", day_to)):
        if day is not None and (why := out_of_range(day)):
            raise InvalidInput(f"{name}: {why}", field=name)
    if day_from is not None and day_to is not None and day_from > day_to:
        raise InvalidInput(f"day_from {day_from} is after day_to {day_to}", field="day_from")
    first = _midnight_hour(day_from, zone) if day_from else None
    end = _midnight_hour(day_to + timedelta(days=1), zone) if day_to else None
    return _Query(
        group_by=tuple(dict.fromkeys(group_by)),  # a group named twice is grouped once
        zone=zone,
        hours=(first, end),
    )


def _midnight_hour(day: date, zone: ZoneInfo) -> int:
    """The UTC hour bucket in which local midnight of `day` falls."""
    instant = datetime.combine(day, time(), zone)
    return int(instant.timestamp() // 3600)


# --- the statement ----------------------------------------------------------------------------


def _aggregate(
    session: Session,
    query: _Query,
    prices: Settings,
    campaign_id: int | None,
    wave_id: int | None,
    channel: str | None,
    area_code: str | None,
) -> Select[Any]:
    """The rollup summed per key asked for, channel and status (the measures are made from the
    statuses in Python: a dozen conditional sums per row cost more than the scan), with the
    segments priced as they are summed.

    The smallest rollup that can answer reads (_table). By area, two levels: the rollup summed
    per commune and the rest of the key, then, only then, those rows joined with the area table
    and summed per area level: the join sees hundreds of rows, not the whole rollup."""
    table = _table(query, campaign_id, wave_id, area_code)
    wave = aliased(Wave)
    rules = price_rules(prices)
    # The wave table only when something needs it: a by-day or by-carrier question reads the
    # rollup alone, and stats_rollup_area holds the class prices may depend on.
    needs_wave = bool({"campaign", "wave"} & set(query.group_by)) or (
        table is not R_AREA and any(r.message_class != ANY for r in rules)
    )
    source = table.join(wave, wave.id == table.c.wave_id) if needs_wave else table
    where = _filters(session, query, table, campaign_id, wave_id, channel, area_code)
    keys = _base_keys(session, query, table, wave, source, where)
    keys["channel"] = table.c.channel.label("channel")
    keys["status"] = table.c.status.label("status")
    message_class = table.c.message_class if table is R_AREA else wave.message_class
    price = _price(session, rules, prices.sms_price_per_segment, table, message_class)
    sums = [
        func.sum(table.c.n).label("n"),
        func.sum(table.c.segments).label("segments"),
        func.sum(table.c.segments * price).label("cost"),
    ]
    inner = select(*keys.values(), *sums).select_from(source).where(*where).group_by(*keys.values())
    if not set(AREA_GROUPS) & set(query.group_by):
        return inner
    base = inner.subquery("base")
    area_columns, joined = _areas(base, query.group_by)
    outer_keys = [base.c[k] for k in keys if k != "area_code"] + area_columns
    outer_sums = [func.sum(base.c[m]).label(m) for m in ("n", "segments", "cost")]
    return select(*outer_keys, *outer_sums).select_from(joined).group_by(*outer_keys)


def _table(
    query: _Query, campaign_id: int | None, wave_id: int | None, area_code: str | None
) -> Any:
    """The rollup that answers: the one without areas when no area is asked for; the one without
    waves and hours when an area is but no campaign, wave or day is; else the full one."""
    if not set(AREA_GROUPS) & set(query.group_by) and area_code is None:
        return R_WAVE
    by_wave = bool({"campaign", "wave"} & set(query.group_by)) or (
        campaign_id is not None or wave_id is not None
    )
    by_time = "day" in query.group_by or query.hours != (None, None)
    return R if by_wave or by_time else R_AREA


def _filters(
    session: Session,
    query: _Query,
    table: Any,
    campaign_id: int | None,
    wave_id: int | None,
    channel: str | None,
    area_code: str | None,
) -> list[ColumnElement[bool]]:
    # Keys whose messages all moved on are left with zeros: skip them.
    where: list[ColumnElement[bool]] = [or_(table.c.n != 0, table.c.segments != 0)]
    if campaign_id is not None or wave_id is not None:
        # The waves first (a small query), then the rollup by its key's first column: the
        # planner then reads those waves' rows through the primary key instead of the table.
        where.append(table.c.wave_id.in_(_wave_ids(session, campaign_id, wave_id)))
    if channel is not None:
        where.append(table.c.channel == channel)
    if area_code is not None:
        where.append(table.c.area_code.in_(_codes_under(session, area_code)))
    first, end = query.hours
    if first is not None:
        where.append(table.c.hour >= first)
    if end is not None:
        where.append(table.c.hour < end)
    return where


def _wave_ids(session: Session, campaign_id: int | None, wave_id: int | None) -> list[int]:
    """The waves of the campaign and/or the wave: a wave of the spec with its occurrences."""
    found = select(col(Wave.id))
    if campaign_id is not None:
        found = found.where(col(Wave.campaign_id) == campaign_id)
    if wave_id is not None:
        found = found.where(or_(col(Wave.id) == wave_id, col(Wave.parent_id) == wave_id))
    return list(session.scalars(found))


def _codes_under(session: Session, area_code: str) -> list[str]:
    """The area and every area below it (the rollup holds the recipient's area, a commune).
    Read first, as the waves are: given the codes, PostgreSQL estimates a district's share of
    the rollup and reads its communes' hours by ix_stats_rollup_area_hour; given a subquery, it
    guessed more rows and scanned the whole table (58 ms instead of 10 for a district's week)."""
    path = session.scalar(select(col(Area.path)).where(col(Area.code) == area_code))
    if path is None:
        raise InvalidInput(f"area {area_code!r} is not in the area table", field="area_code")
    under = select(col(Area.code)).where(col(Area.path).startswith(path, autoescape=True))
    return list(session.scalars(under))


def _base_keys(
    session: Session,
    query: _Query,
    table: Any,
    wave: Any,
    source: Any,
    where: list[ColumnElement[bool]],
) -> dict[str, ColumnElement[Any]]:
    """The first level's grouping columns, by name."""
    wanted = set(query.group_by)
    available: dict[str, Any] = {
        "campaign": lambda: wave.campaign_id,
        # An occurrence of a recurring or relative wave counts under the wave of the spec.
        "wave": lambda: func.coalesce(wave.parent_id, wave.id),
        "day": lambda: _day(session, query, table, source, where),
        "carrier": lambda: table.c.carrier,
        "error_code": lambda: table.c.error_code,
        "adapter": lambda: table.c.adapter,
    }
    keys = {name: make().label(name) for name, make in available.items() if name in wanted}
    if wanted & set(AREA_GROUPS):
        keys["area_code"] = table.c.area_code.label("area_code")
    return keys


def _price(
    session: Session, rules: list[PriceRule], flat: float, table: Any, message_class: Any
) -> Any:
    """The price of a segment of each rollup row as SQL: the first of the rules that matches
    the row's adapter, carrier and class (`message_class`: the wave's, or the row's own in
    stats_rollup_area; scheduler/pricing.py orders the rules), else the flat
    price (LOA_SMS_PRICE_PER_SEGMENT, 0 when none). One expression summed in the statement,
    instead of keeping every adapter, carrier and class apart to price them afterwards.

    Rules name carriers and adapters in lower case; the rollup keeps them as written. Rather than
    lower() on every row, each rule is turned into the spellings the rollup holds (read from the
    small rollup without areas), and a rule no stored spelling matches is left out. Prices are
    floats: numeric arithmetic on every row costs more than the rest of the sum."""
    spelt: dict[str, set[str]] = {"adapter": set(), "carrier": set()}
    if rules:
        for adapter, carrier in session.execute(
            select(R_WAVE.c.adapter, R_WAVE.c.carrier).distinct()
        ):
            spelt["adapter"].add(adapter)
            spelt["carrier"].add(carrier)
    whens = []
    for rule in rules:
        tests: list[ColumnElement[bool]] = []
        named = {"adapter": rule.adapter, "carrier": rule.carrier}
        spellings = {n: [v for v in spelt[n] if v.lower() == value] for n, value in named.items()}
        if any(named[n] != ANY and not spellings[n] for n in named):
            continue  # no message has that adapter or carrier
        for name, value in named.items():
            if value != ANY:
                tests.append(table.c[name].in_(spellings[name]))
        if rule.message_class != ANY:
            tests.append(message_class == rule.message_class)
        whens.append((and_(true(), *tests), literal(rule.price, Float)))
    return case(*whens, else_=literal(flat, Float)) if whens else literal(flat, Float)


# --- local days from UTC hours ----------------------------------------------------------------


def _day(
    session: Session, query: _Query, table: Any, source: Any, where: list[ColumnElement[bool]]
) -> ColumnElement[int]:
    """The local day of each rollup row, as days since 1970-01-01: (UTC minute + the zone's
    offset then) // minutes a day. Minutes, not seconds: hour * 3600 overflows a 32-bit integer
    in 2038."""
    minute = table.c.hour * 60
    if not _offset_changes(query.zone.key):
        fixed = _offset_minutes(query.zone, _FROM_2000)
        return (minute + fixed) // MINUTES_PER_DAY  # type: ignore[no-any-return]
    first, end = query.hours
    if first is None or end is None:
        # Only the zones that change offset pay for finding the span the data covers.
        span = (
            select(func.min(table.c.hour), func.max(table.c.hour)).select_from(source).where(*where)
        )
        low, high = session.execute(span).one()
        first = first if first is not None else (low or 0)
        end = end if end is not None else (high or 0) + 1
    stretches = _stretches(query.zone.key, first, max(end, first + 1))
    offset: Any = stretches[-1][1]
    if len(stretches) > 1:
        offset = case(*((table.c.hour < until, off) for until, off in stretches[:-1]), else_=offset)
    return (minute + offset) // MINUTES_PER_DAY  # type: ignore[no-any-return]


def _offset_minutes(zone: ZoneInfo, hour: int) -> int:
    offset = datetime.fromtimestamp(hour * 3600, UTC).astimezone(zone).utcoffset()
    assert offset is not None
    return int(offset.total_seconds() // 60)


_WEEK: Final = 7 * 24  # hours; zones keep an offset longer than a week between changes
_FROM_2000: Final = 262_968  # the UTC hour of 2000-01-01 00:00
_TO_2100: Final = 1_139_664  # the UTC hour of 2100-01-01 00:00


@lru_cache(maxsize=64)
def _offset_changes(zone_name: str) -> bool:
    """Whether the zone's offset changes between 2000 and 2100 (DST, or a change of law). A
    fixed zone (Asia/Ho_Chi_Minh since 1975) makes the day a constant shift of the hour."""
    zone = ZoneInfo(zone_name)
    first = _offset_minutes(zone, _FROM_2000)
    return any(_offset_minutes(zone, hour) != first for hour in range(_FROM_2000, _TO_2100, _WEEK))


@lru_cache(maxsize=256)
def _stretches(zone_name: str, first: int, end: int) -> list[tuple[int, int]]:
    """The zone's offset over the UTC hours [first, end): (hour the stretch ends, offset in
    minutes) for each stretch of one offset, in order; the last ends at `end`. A week at a time,
    halving the week where the offset changed to find its hour."""
    zone = ZoneInfo(zone_name)
    current = _offset_minutes(zone, first)
    stretches: list[tuple[int, int]] = []
    hour = first
    while hour < end:
        step = min(hour + _WEEK, end)
        if _offset_minutes(zone, step) == current or step == end:
            hour = step
            continue
        low, high = hour, step  # the offset is `current` at low and another at high
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (
                (middle, high) if _offset_minutes(zone, middle) == current else (low, middle)
            )
        stretches.append((high, current))
        current, hour = _offset_minutes(zone, high), high
    stretches.append((end, current))
    return stretches


# --- areas --------------------------------------------------------------------------------------


def _areas(base: Any, group_by: tuple[str, ...]) -> tuple[list[ColumnElement[Any]], Any]:
    """The code and name of each area level asked for, and `base` joined with the area table to
    find them: an area code's own row, its parent and its grandparent, whichever has the level.
    The hierarchy is data (a commune may sit right under its province since the 2025 reform)."""
    chain = (aliased(Area), aliased(Area), aliased(Area))
    area, parent, grandparent = chain
    joined = (
        base.outerjoin(area, area.code == base.c.area_code)
        .outerjoin(parent, parent.code == area.parent_code)
        .outerjoin(grandparent, grandparent.code == parent.parent_code)
    )
    columns: list[ColumnElement[Any]] = []
    for level in (g for g in group_by if g in AREA_GROUPS):
        for attribute, label in (("code", level), ("name", f"{level}_name")):
            whens = [
                (col(node.level) == AreaLevel(level).value, getattr(node, attribute))
                for node in chain
            ]
            columns.append(case(*whens, else_=None).label(label))
    return columns, joined


# --- rows ---------------------------------------------------------------------------------------


NAMED: Final = ("campaign", "wave", *AREA_GROUPS)  # groups shown with a name beside the code
MEASURES: Final = (*STATUS_MEASURES, "segments", "cost", "delivery_rate", "plays")


def key_columns(group_by: Sequence[str]) -> list[str]:
    """The entries of a StatsRow's key for `group_by`, in order: each group, with its name after
    it where it has one (district, district_name)."""
    columns: list[str] = []
    for group in dict.fromkeys(group_by):
        columns += [group, f"{group}_name"] if group in NAMED else [group]
    return columns


def stats_csv(rows: Sequence[StatsRow], group_by: Sequence[str]) -> str:
    """The rows as CSV text with a header: the key's columns, then the measures."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    columns = key_columns(group_by)
    writer.writerow([*columns, *MEASURES])
    for row in rows:
        measures = [getattr(row, m) for m in MEASURES]
        writer.writerow(
            [row.key.get(c) for c in columns] + ["" if v is None else v for v in measures]
        )
    return text.getvalue()


_SUMMED: Final = (*STATUS_MEASURES, "segments", "cost", "plays")
_SUMMED_OF: Final = {
    status: tuple(_SUMMED.index(m) for m in measures) for status, measures in _MEASURES_OF.items()
}
_SEGMENTS, _COST, _PLAYS = (_SUMMED.index(m) for m in ("segments", "cost", "plays"))


def _fold(rows: Sequence[Any], columns: Sequence[str], query: _Query) -> list[StatsRow]:
    """The statement's rows (per key, channel and status; `columns` name their fields) as
    StatsRows: each status counted in its measures, and summed over the statuses (and channels,
    when not asked for). Summed in plain lists by the key as stored, each key turned into what
    it shows (a day's date, None for '') once, and a StatsRow made once per key without
    validation: setting a pydantic model's fields, or converting and validating each key, for
    each of a few thousand rows cost more than the statement."""
    # Campaign and wave names are added after (_named): the statement has ids only.
    names = [c for c in key_columns(query.group_by) if c not in ("campaign_name", "wave_name")]
    at = {name: i for i, name in enumerate(columns)}
    key_at = [at[name] for name in names]
    n_at, segments_at, cost_at = at["n"], at["segments"], at["cost"]
    channel_at, status_at = at["channel"], at["status"]
    stored: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        key = tuple([row[i] for i in key_at])
        sums = stored.get(key)
        if sums is None:
            sums = stored[key] = [0] * len(_SUMMED)
        n = int(row[n_at] or 0)
        if row[channel_at] == LOUDSPEAKER:
            sums[_PLAYS] += n if row[status_at] == "played" else 0
            continue
        for i in _SUMMED_OF.get(row[status_at], ()):
            sums[i] += n
        sums[_SEGMENTS] += int(row[segments_at] or 0)
        sums[_COST] += float(row[cost_at] or 0)
    folded: dict[tuple[Any, ...], list[Any]] = {}
    for key, sums in stored.items():
        # '' and NULL (an area level a commune lacks) both show as None: one row.
        shown = tuple(_key_value(name, value) for name, value in zip(names, key, strict=True))
        into = folded.setdefault(shown, [0] * len(_SUMMED))
        for i, value in enumerate(sums):
            into[i] += value
    result = []
    for key, sums in folded.items():
        measures = dict(zip(_SUMMED, sums, strict=True))
        measures["cost"] = round(float(measures["cost"]), 2)
        sent, delivered = measures["sent"], measures["delivered"]
        # Built from ints, floats and the key's own values: nothing to validate.
        result.append(
            StatsRow.model_construct(
                key=dict(zip(names, key, strict=True)),
                delivery_rate=round(delivered / sent, 4) if sent else None,
                **measures,
            )
        )
    return sorted(result, key=lambda r: [_sortable(v) for v in r.key.values()])


def _key_value(name: str, value: Any) -> str | int | None:
    if name == "day":
        return (EPOCH + timedelta(days=int(value))).isoformat()
    if value == "":  # the rollup's "none" (no carrier known, no error)
        return None
    return value  # type: ignore[no-any-return]


def _sortable(value: str | int | None) -> tuple[int, str | int]:
    return (1, "") if value is None else (0, value)


def _named(session: Session, rows: list[StatsRow], group_by: tuple[str, ...]) -> list[StatsRow]:
    """Campaign and wave names beside their ids: one small query each, for the ids shown."""
    names: dict[str, dict[Any, str]] = {}
    for group, model in (("campaign", Campaign), ("wave", Wave)):
        ids = {r.key[group] for r in rows} - {None} if group in group_by else set()
        if ids:
            found = select(col(model.id), col(model.name)).where(col(model.id).in_(ids))
            names[group] = {id_: name for id_, name in session.execute(found)}
    if not names:
        return rows
    for r in rows:
        key: dict[str, str | int | None] = {}
        for name, value in r.key.items():
            key[name] = value
            if name in names:
                key[f"{name}_name"] = names[name].get(value)
        r.key = key
    return rows
