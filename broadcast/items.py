"""Broadcast items: what launching a loudspeaker wave writes.

A loudspeaker wave is never in the outbox (no SMS adapter ever sees it). When its campaign is
launched, every slot still to come of its schedule becomes one `broadcast_item` (the wave's
audio at a local time on a local date, its priority and repeats), and each item gets one
`broadcast_target` per commune under the wave's areas (through `area.path`, so "province 42"
is every commune of 42, whatever level sits between). All of it at launch rather than when each
slot comes: a culture centre pulls a day's playlist before its first slot, and a month of a
province is a few thousand item rows and some hundred thousand target rows, written in two
set-based statements.

The UNIQUE (wave, date, slot) and the targets' primary key make writing them again harmless.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Engine, func, literal, or_, select
from sqlmodel import Session, col

from loa.db import session_scope, upsert_insert
from loa.errors import Conflict, InvalidInput
from loa.models import (
    Area,
    AreaLevel,
    AudioAsset,
    BroadcastItem,
    BroadcastPriority,
    BroadcastTarget,
    Campaign,
    CampaignStatus,
    Wave,
    WaveKind,
    WaveStatus,
)
from loa.settings import Settings
from scheduler.triggers import Recurring, localize, localize_forward, trigger_of

ITEM = BroadcastItem.__table__  # type: ignore[attr-defined]
TARGET = BroadcastTarget.__table__  # type: ignore[attr-defined]


def resolve_audio(session: Session, reference: str, where: str) -> AudioAsset:
    """The stored asset a wave names by sha256 or by name; `where` names the wave. A name two
    assets share is refused with both hashes: the wave must say which."""
    asset = session.get(AudioAsset, reference)
    if asset is not None:
        return asset
    named = session.scalars(
        select(AudioAsset).where(col(AudioAsset.name) == reference).order_by(col(AudioAsset.sha256))
    ).all()
    if len(named) == 1:
        return named[0]
    if named:
        raise InvalidInput(
            f"{where}, field audio: {len(named)} stored files are named {reference!r} "
            f"({', '.join(a.sha256[:12] for a in named)}...); give the sha256 of the one to play",
            field="audio",
        )
    raise InvalidInput(
        f"{where}, field audio: no stored audio named {reference!r} (add it first: "
        "loa audio add FILE, or POST /api/v1/audio; loa audio list shows what is stored)",
        field="audio",
    )


def communes_under(paths: list[str]) -> ColumnElement[bool]:
    """Communes whose path starts with one of `paths` (an area's own path included)."""
    return (col(Area.level) == AreaLevel.COMMUNE.value) & or_(
        *(col(Area.path).startswith(p, autoescape=True) for p in paths)
    )


def area_paths(session: Session, codes: list[str]) -> list[str]:
    return list(session.scalars(select(col(Area.path)).where(col(Area.code).in_(codes))))


def count_communes(session: Session, codes: list[str]) -> int:
    paths = area_paths(session, codes)
    if not paths:
        return 0
    return session.scalar(select(func.count()).select_from(Area).where(communes_under(paths))) or 0


def slot_starts(wave: Wave, zone: ZoneInfo, *, now: datetime) -> list[tuple[datetime, datetime]]:
    """(local time, UTC instant) of each slot of the wave still to come. An `at` wave whose time
    has passed is refused, except an emergency, which starts now: it is meant to play at once."""
    trigger = trigger_of(wave.trigger)
    if isinstance(trigger, Recurring):
        starts = []
        for local in trigger.local_occurrences(since=now.astimezone(zone).date()):
            instant = localize_forward(local, zone)
            if instant >= now:
                starts.append((local, instant))
        return starts
    assert isinstance(trigger, datetime)  # the spec allows at or recurring only
    instant = localize(trigger, zone)
    if instant < now:
        if (wave.options or {}).get("priority") != BroadcastPriority.EMERGENCY:
            local = instant.astimezone(zone)
            raise Conflict(
                f"campaign {wave.campaign_id}: wave {wave.name!r} was due at "
                f"{local:%Y-%m-%d %H:%M} ({zone.key}), which has passed; change its time and "
                "create the campaign again"
            )
        instant = now
    local = instant.astimezone(zone).replace(tzinfo=None, microsecond=0)
    return [(local, instant)]


def write_items(
    session: Session, wave: Wave, zone: ZoneInfo, *, now: datetime, settings: Settings
) -> int:
    """Write the wave's items and their communes; mark the wave written (`expanded`), due from
    its first slot until the end of its last. Return how many (item, commune) pairs it has."""
    assert wave.id is not None and wave.kind == WaveKind.BROADCAST
    options = wave.options or {}
    length = timedelta(minutes=settings.broadcast_slot_minutes)
    starts = slot_starts(wave, zone, now=now)
    if not starts:
        raise Conflict(
            f"campaign {wave.campaign_id}: wave {wave.name!r} has no slot left to broadcast; "
            "change its dates and create the campaign again"
        )
    rows: list[dict[str, Any]] = [
        {
            "wave_id": wave.id,
            "campaign_id": wave.campaign_id,
            "local_date": local.date(),
            "slot": f"{local:%H:%M}",
            "starts_at": instant,
            "valid_until": instant + length,
            "priority": options["priority"],
            "repeats": options["repeats"],
            "audio_sha256": options["audio"],
            "ranked_at": now,
        }
        for local, instant in starts
    ]
    connection = session.connection()
    session.execute(
        upsert_insert(connection, ITEM).on_conflict_do_nothing(
            index_elements=["wave_id", "local_date", "slot"]
        ),
        rows,
    )
    paths = area_paths(session, list(wave.audience.get("areas", [])))
    targets = (
        select(col(BroadcastItem.id), col(Area.code))
        .join(Area, literal(True))
        .where(col(BroadcastItem.wave_id) == wave.id, communes_under(paths))
    )
    session.execute(
        upsert_insert(connection, TARGET)
        .on_conflict_do_nothing(index_elements=["item_id", "commune_code"])
        .from_select(["item_id", "commune_code"], targets)
    )
    count = (
        session.scalar(
            select(func.count())
            .select_from(BroadcastTarget)
            .join(BroadcastItem, col(BroadcastItem.id) == col(BroadcastTarget.item_id))
            .where(col(BroadcastItem.wave_id) == wave.id)
        )
        or 0
    )
    wave.fire_at = starts[0][1]
    wave.expires_at = starts[-1][1] + length
    wave.status = WaveStatus.EXPANDED
    wave.expanded_at = now
    wave.expanded_count = count
    return count


def start_due_broadcasts(engine: Engine, *, now: datetime) -> list[int]:
    """Campaigns still `scheduled` whose first broadcast slot has come: the ids, for the tick to
    mark running (an SMS wave does this when it fires; a loudspeaker wave never fires)."""
    with session_scope(engine) as session:
        return list(
            session.scalars(
                select(col(Wave.campaign_id))
                .join(Campaign, col(Campaign.id) == col(Wave.campaign_id))
                .where(
                    col(Campaign.status) == CampaignStatus.SCHEDULED,
                    col(Wave.kind) == WaveKind.BROADCAST,
                    col(Wave.fire_at) <= now,
                )
                .distinct()
            )
        )


def broadcast_finished(now: datetime) -> ColumnElement[bool]:
    """For the tick's closing of waves: a loudspeaker wave is done when its last slot is over
    (it has no outbox messages, so "nothing left in flight" is true from its launch)."""
    return or_(col(Wave.kind) != WaveKind.BROADCAST, col(Wave.expires_at) <= now)
