"""Which waves may send right now: their campaign is running and their class's window is open.

The dispatcher asks on every claim, so a pause or a closing window takes effect at once for every
message not yet claimed. The scheduler also moves the due time of messages waiting for a window to
its next opening, so that they do not sit in the claim index while the window is closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import text, update
from sqlmodel import Session, col, select

from loa.models import PLANNED_ONLY, Campaign, CampaignStatus, OutboxMessage, Wave, WaveStatus
from loa.settings import Settings
from scheduler.policy import window_for
from scheduler.windows import is_open, next_open


@dataclass(frozen=True)
class ActiveWave:
    id: int
    message_class: str
    zone: ZoneInfo


def active_waves(session: Session) -> list[ActiveWave]:
    """Waves with messages in the outbox, of campaigns that are running. A handful at a time."""
    rows = session.exec(
        select(Wave.id, Wave.message_class, Campaign.timezone)
        .join(Campaign, col(Campaign.id) == col(Wave.campaign_id))
        .where(
            col(Campaign.status) == CampaignStatus.RUNNING,
            col(Wave.status).in_([WaveStatus.EXPANDING, WaveStatus.EXPANDED]),
        )
    ).all()
    return [ActiveWave(id_, cls, ZoneInfo(tz)) for id_, cls, tz in rows if id_ is not None]


def sendable_wave_ids(session: Session, *, now: datetime, settings: Settings) -> list[int]:
    return [
        wave.id
        for wave in active_waves(session)
        if is_open(now, window_for(wave.message_class, settings), wave.zone)
    ]


def defer_closed_waves(
    session: Session, *, now: datetime, settings: Settings
) -> dict[int, datetime]:
    """Move the waiting messages of waves whose window is closed to the window's next opening."""
    deferred = {}
    for wave in active_waves(session):
        window = window_for(wave.message_class, settings)
        if is_open(now, window, wave.zone):
            continue
        opens = next_open(now, window, wave.zone)
        session.execute(
            update(OutboxMessage)
            .where(
                col(OutboxMessage.wave_id) == wave.id,
                text(PLANNED_ONLY),
                col(OutboxMessage.due_at) < opens,
            )
            .values(due_at=opens, updated_at=now)
        )
        deferred[wave.id] = opens
    return deferred
