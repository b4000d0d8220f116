"""A district's playlist for a day: the JSON document that culture centres pull (and that the
loudspeaker push adapter sends), built from broadcast items and their communes.

"District" is any area: the 2025 reform removed the district level in law, and a culture centre
now serves whatever group of communes the area table says; the communes are those under the
area's path. A commune's own code gives that commune's playlist.

Which campaigns play: scheduled, running and completed ones (a completed campaign's past days
stay readable). A paused or cancelled campaign's items leave the playlists at once, and come
back when it is resumed.

Order: emergency items first (Circular 39/2020: played at once, at the head of every playlist
they are in; `play_at_once` says so to the player), then by start time, priority and launch.
Each slot keeps what fits (broadcast/slots.py); the rest is listed under `overflow`, per item,
with the communes where it does not fit.

The document depends on the data only (no "generated at"): the same data gives the same bytes,
so the API's strong ETag lets a centre on a slow link re-pull for nothing.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, func, select
from sqlmodel import Session, col

from broadcast.items import communes_under
from broadcast.slots import PRIORITY_RANK, SlotEntry, fit_slots
from loa.errors import NotFound
from loa.models import (
    Area,
    AudioAsset,
    BroadcastItem,
    BroadcastTarget,
    Campaign,
    CampaignStatus,
    Wave,
)
from loa.settings import Settings

PLAYING_CAMPAIGNS = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.COMPLETED)
AUDIO_PATH = "/api/v1/audio/{sha256}.mp3"


class PlaylistItem(BaseModel):
    id: int  # the broadcast item: what a play report names
    wave_id: int
    campaign_id: int
    title: str
    communes: list[str]  # commune codes it plays in (where it fits its slot)
    date: date  # local
    start_local: str  # "06:00", the slot's local start; items of a slot play in list order
    starts_at: datetime  # the same instant with its UTC offset
    valid_until: datetime  # not to be played after this (the slot is over)
    priority: str  # emergency | priority | normal
    play_at_once: bool  # emergency: play now, whatever the slot
    repeats: int  # plays in a row
    audio_url: str
    sha256: str
    bytes: int
    duration_ms: int


class OverflowEntry(BaseModel):
    item: int
    wave_id: int
    title: str
    communes: list[str]  # where its slot is full
    start_local: str
    priority: str
    airtime_ms: int  # duration x repeats
    reason: str


class Playlist(BaseModel):
    area: str
    area_name: str
    date: date
    slot_minutes: int
    items: list[PlaylistItem]
    overflow: list[OverflowEntry]


def audio_url(base_url: str, sha256: str) -> str:
    return base_url.rstrip("/") + AUDIO_PATH.format(sha256=sha256)


def get_area(session: Session, code: str) -> Area:
    area = session.get(Area, code)
    if area is None:
        raise NotFound(f"no area with code {code!r} (see: loa areas import, loa areas load)")
    return area


def _rows(session: Session, *where: ColumnElement[bool]) -> list[Any]:
    return list(
        session.execute(
            select(
                col(BroadcastItem.id),
                col(BroadcastItem.wave_id),
                col(BroadcastItem.campaign_id),
                col(BroadcastItem.local_date),
                col(BroadcastItem.slot),
                col(BroadcastItem.starts_at),
                col(BroadcastItem.valid_until),
                col(BroadcastItem.priority),
                col(BroadcastItem.repeats),
                col(BroadcastItem.ranked_at),
                col(BroadcastItem.audio_sha256),
                col(BroadcastTarget.commune_code),
                col(AudioAsset.bytes),
                col(AudioAsset.duration_ms),
                col(Wave.name),
                col(Campaign.timezone),
            )
            .select_from(BroadcastTarget)
            .join(BroadcastItem, col(BroadcastItem.id) == col(BroadcastTarget.item_id))
            .join(Area, col(Area.code) == col(BroadcastTarget.commune_code))
            .join(AudioAsset, col(AudioAsset.sha256) == col(BroadcastItem.audio_sha256))
            .join(Wave, col(Wave.id) == col(BroadcastItem.wave_id))
            .join(Campaign, col(Campaign.id) == col(BroadcastItem.campaign_id))
            .where(col(Campaign.status).in_(PLAYING_CAMPAIGNS), *where)
        ).all()
    )


def slot_entries(session: Session, paths: list[str], days: list[date]) -> list[SlotEntry]:
    """What is in the slots of the communes under `paths` on `days` (for a plan's overflow)."""
    if not paths or not days:
        return []
    return [
        _entry(row)
        for row in _rows(session, communes_under(paths), col(BroadcastItem.local_date).in_(days))
    ]


def _entry(row: Any) -> SlotEntry:
    return SlotEntry(
        item_id=row.id,
        commune=row.commune_code,
        local_date=row.local_date,
        slot=row.slot,
        priority=row.priority,
        ranked_at=row.ranked_at,
        duration_ms=row.duration_ms,
        repeats=row.repeats,
    )


def district_playlist(
    session: Session, district_code: str, day: date, *, settings: Settings, base_url: str
) -> Playlist:
    """The playlist of the communes under `district_code` for the local date `day`. Audio URLs
    are absolute: `base_url` (LOA_PUBLIC_URL, or the URL the request came to) + the audio path."""
    area = get_area(session, district_code)
    rows = _rows(session, communes_under([area.path]), col(BroadcastItem.local_date) == day)
    by_id = {row.id: row for row in rows}
    fitted = fit_slots((_entry(row) for row in rows), settings.broadcast_slot_minutes * 60_000)
    communes: dict[int, list[str]] = {}
    for placed in fitted.placed:
        assert placed.entry.item_id is not None
        communes.setdefault(placed.entry.item_id, []).append(placed.entry.commune)
    overflowing: dict[int, list[str]] = {}
    for entry in fitted.overflow:
        assert entry.item_id is not None
        overflowing.setdefault(entry.item_id, []).append(entry.commune)

    def local(instant: datetime, row: Any) -> datetime:
        return instant.astimezone(ZoneInfo(row.timezone))

    items = [
        PlaylistItem(
            id=item_id,
            wave_id=row.wave_id,
            campaign_id=row.campaign_id,
            title=row.name,
            communes=sorted(codes),
            date=row.local_date,
            start_local=row.slot,
            starts_at=local(row.starts_at, row),
            valid_until=local(row.valid_until, row),
            priority=row.priority,
            play_at_once=row.priority == "emergency",
            repeats=row.repeats,
            audio_url=audio_url(base_url, row.audio_sha256),
            sha256=row.audio_sha256,
            bytes=row.bytes,
            duration_ms=row.duration_ms,
        )
        for item_id, codes in communes.items()
        for row in [by_id[item_id]]
    ]
    items.sort(
        key=lambda i: (
            not i.play_at_once,
            i.starts_at,
            PRIORITY_RANK[i.priority],
            by_id[i.id].ranked_at,
            i.id,
        )
    )
    minutes = settings.broadcast_slot_minutes
    overflow = [
        OverflowEntry(
            item=item_id,
            wave_id=row.wave_id,
            title=row.name,
            communes=sorted(codes),
            start_local=row.slot,
            priority=row.priority,
            airtime_ms=row.duration_ms * row.repeats,
            reason=_why_overflow(row.slot, row.duration_ms * row.repeats, minutes),
        )
        for item_id, codes in sorted(overflowing.items())
        for row in [by_id[item_id]]
    ]
    return Playlist(
        area=area.code,
        area_name=area.name,
        date=day,
        slot_minutes=minutes,
        items=items,
        overflow=overflow,
    )


def _why_overflow(slot: str, airtime_ms: int, minutes: int) -> str:
    if airtime_ms > minutes * 60_000:
        return (
            f"it lasts longer ({airtime_ms / 60_000:.1f} min with its repeats) than the {slot} "
            f"slot ({minutes} min, LOA_BROADCAST_SLOT_MINUTES)"
        )
    return (
        f"the {slot} slot ({minutes} min, LOA_BROADCAST_SLOT_MINUTES) is full with items of "
        "higher priority or earlier launch"
    )


def audio_of_area(area_path: str) -> Select[str]:
    """The audio (sha256s) in some playlist of a commune under the area, any day: what a
    district key may read. Through the item's communes, by index."""
    return (
        select(col(BroadcastItem.audio_sha256))
        .join(BroadcastTarget, col(BroadcastTarget.item_id) == col(BroadcastItem.id))
        .join(Area, col(Area.code) == col(BroadcastTarget.commune_code))
        .where(communes_under([area_path]))
    )


def audio_in_area(session: Session, sha256: str, area_path: str) -> bool:
    found = session.scalar(
        audio_of_area(area_path).where(col(BroadcastItem.audio_sha256) == sha256).limit(1)
    )
    return found is not None


def broadcast_version_columns() -> tuple[Any, Any]:
    """What broadcast_version reads, as two scalar subqueries (the API reads them in its own
    statement with the other versions it keeps: api/readcache.py)."""
    return (
        select(func.max(col(Campaign.updated_at))).scalar_subquery(),
        select(func.max(col(BroadcastItem.id))).scalar_subquery(),
    )


def broadcast_version(session: Session) -> tuple[Any, ...]:
    """Moves whenever a playlist's content may have: every lifecycle transition (launch, pause,
    resume, cancel, completion) stamps its campaign's updated_at, and items are only ever added.
    Two aggregates in one statement: over the campaign table (small) and the item table's
    primary key (one index probe). The API's playlist cache and the pushes to controllers both
    key on it."""
    return tuple(session.execute(select(*broadcast_version_columns())).one())
