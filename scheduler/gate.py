"""Which waves may send right now: their campaign is running, their send window is open (the
wave's own, else its class's) and, for an occurrence of a series, it has not expired.

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
from scheduler.windows import SendWindow, is_open, next_open, parse_window


@dataclass(frozen=True)
class ActiveWave:
    id: int
    channel: str
    window: SendWindow | None
    zone: ZoneInfo
    expires_at: datetime | None


def wave_window(wave: Wave, settings: Settings) -> SendWindow | None:
    """The wave's own window if its spec gave one, else its class's (a setting)."""
    own = (wave.options or {}).get("window")
    return parse_window(own) if own is not None else window_for(wave.message_class, settings)


def active_waves(session: Session, settings: Settings) -> list[ActiveWave]:
    """Waves with messages in the outbox, of campaigns that are running. A handful at a time."""
    rows = session.exec(
        select(Wave, Campaign.timezone)
        .join(Campaign, col(Campaign.id) == col(Wave.campaign_id))
        .where(
            col(Campaign.status) == CampaignStatus.RUNNING,
            col(Wave.status).in_([WaveStatus.EXPANDING, WaveStatus.EXPANDED]),
        )
        # The dispatcher claims in this order: the oldest wave first.
        .order_by(col(Wave.id))
    ).all()
    return [
        ActiveWave(
            wave.id, wave.channel, wave_window(wave, settings), ZoneInfo(tz), wave.expires_at
        )
        for wave, tz in rows
        if wave.id is not None
    ]


def sendable_wave_ids(session: Session, *, now: datetime, settings: Settings) -> list[int]:
    return [
        wave.id
        for wave in active_waves(session, settings)
        if is_open(now, wave.window, wave.zone)
        and (wave.expires_at is None or now < wave.expires_at)
    ]


def defer_closed_waves(
    session: Session, *, now: datetime, settings: Settings
) -> dict[int, datetime]:
    """Move the waiting messages of waves whose window is closed to the window's next opening."""
    deferred = {}
    for wave in active_waves(session, settings):
        if is_open(now, wave.window, wave.zone):
            continue
        opens = next_open(now, wave.window, wave.zone)
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
