"""The plan of a loudspeaker wave: its slots still to come, the communes, and what will not fit.

Read-only. A launched wave is planned from its items; a wave not launched yet from the items it
would write, ranked after every item already launched (it would be launched last), against the
items of other campaigns already in the same communes' slots on those days. Overflow is a
figure of the plan, not a refusal: the office may launch and accept it, or move the wave.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import select
from sqlmodel import Session, col

from broadcast.items import area_paths, communes_under, slot_starts
from broadcast.playlist import slot_entries
from broadcast.slots import SlotEntry, fit_slots
from loa.errors import LoaError
from loa.models import Area, AudioAsset, BroadcastItem, BroadcastTarget, Wave, WaveStatus
from loa.settings import Settings

OVERFLOW_LISTED = 20


class SlotOverflow(BaseModel):
    date: str  # local
    slot: str
    communes: list[str]


class BroadcastPlan(BaseModel):
    audio: str  # sha256
    duration_ms: int | None
    priority: str
    repeats: int
    slots: int  # still to come
    communes: int
    to_play: int  # (slot, commune) pairs that fit
    overflow: int  # (slot, commune) pairs whose slot is full
    overflow_slots: list[SlotOverflow]  # the first LOA plan lists
    first_at: datetime | None
    last_until: datetime | None


def plan_broadcast(
    session: Session, wave: Wave, zone: ZoneInfo, *, now: datetime, settings: Settings
) -> tuple[BroadcastPlan, list[str]]:
    """The broadcast plan of `wave`, and why it could not be launched (empty when it can)."""
    options = wave.options or {}
    refusals: list[str] = []
    asset = session.get(AudioAsset, options.get("audio", ""))
    if asset is None:
        refusals.append(f"audio {options.get('audio')!r} is no longer stored")
    paths = area_paths(session, list(wave.audience.get("areas", [])))
    length = timedelta(minutes=settings.broadcast_slot_minutes)
    today = now.astimezone(zone).date()
    mine: list[SlotEntry]
    entries: list[SlotEntry]
    if wave.status in (WaveStatus.EXPANDED, WaveStatus.DONE):
        days = list(
            session.scalars(
                select(col(BroadcastItem.local_date))
                .where(
                    col(BroadcastItem.wave_id) == wave.id, col(BroadcastItem.local_date) >= today
                )
                .distinct()
            )
        )
        entries = slot_entries(session, paths, days)
        ids = set(
            session.scalars(
                select(col(BroadcastItem.id)).where(
                    col(BroadcastItem.wave_id) == wave.id, col(BroadcastItem.local_date) >= today
                )
            )
        )
        mine = [e for e in entries if e.item_id in ids]
        communes = len(
            set(
                session.scalars(
                    select(col(BroadcastTarget.commune_code)).where(
                        col(BroadcastTarget.item_id).in_(ids)
                    )
                )
            )
        )
        starts = sorted(
            session.scalars(
                select(col(BroadcastItem.starts_at)).where(col(BroadcastItem.id).in_(ids))
            )
        )
    else:
        try:
            starts = [instant for _, instant in slot_starts(wave, zone, now=now)]
        except LoaError as exc:
            refusals.append(exc.message)
            starts = []
        codes = (
            list(session.scalars(select(col(Area.code)).where(communes_under(paths))))
            if paths
            else []
        )
        communes = len(codes)
        mine = [
            SlotEntry(
                item_id=None,
                commune=code,
                local_date=instant.astimezone(zone).date(),
                slot=f"{instant.astimezone(zone):%H:%M}",
                priority=options.get("priority", "normal"),
                ranked_at=now,
                duration_ms=asset.duration_ms if asset else 0,
                repeats=options.get("repeats", 1),
            )
            for instant in starts
            for code in codes
        ]
        days = sorted({e.local_date for e in mine})
        entries = slot_entries(session, paths, days) + mine
    fitted = fit_slots(entries, settings.broadcast_slot_minutes * 60_000)
    own = {id(e) for e in mine}
    overflowing = [e for e in fitted.overflow if id(e) in own]
    by_slot: dict[tuple[str, str], list[str]] = {}
    for entry in overflowing:
        by_slot.setdefault((entry.local_date.isoformat(), entry.slot), []).append(entry.commune)
    plan = BroadcastPlan(
        audio=str(options.get("audio")),
        duration_ms=asset.duration_ms if asset else None,
        priority=options.get("priority", "normal"),
        repeats=options.get("repeats", 1),
        slots=len(starts),
        communes=communes,
        to_play=len(mine) - len(overflowing),
        overflow=len(overflowing),
        overflow_slots=[
            SlotOverflow(date=day, slot=slot, communes=sorted(codes))
            for (day, slot), codes in sorted(by_slot.items())[:OVERFLOW_LISTED]
        ],
        first_at=starts[0] if starts else None,
        last_until=starts[-1] + length if starts else None,
    )
    return plan, refusals
