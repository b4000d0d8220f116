"""One pass of the active scheduler: fire the waves that are due, close what has finished."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, exists, select, update
from sqlmodel import col

from loa import audit
from loa.db import session_scope
from loa.models import Campaign, CampaignStatus, MessageStatus, OutboxMessage, Wave, WaveStatus
from scheduler.expand import expand_wave

log = logging.getLogger(__name__)

IN_FLIGHT = (MessageStatus.PLANNED, MessageStatus.CLAIMED, MessageStatus.SENDING)


@dataclass
class TickReport:
    fired: dict[int, int] = field(default_factory=dict)  # wave id -> outbox rows
    waves_done: list[int] = field(default_factory=list)
    campaigns_completed: list[int] = field(default_factory=list)


def run_tick(engine: Engine, *, now: datetime, chunk_size: int) -> TickReport:
    report = TickReport()
    with session_scope(engine) as session:
        due = session.execute(
            select(col(Wave.id), col(Wave.campaign_id))
            .where(
                col(Wave.status).in_([WaveStatus.SCHEDULED, WaveStatus.EXPANDING]),
                col(Wave.fire_at) <= now,
            )
            .order_by(col(Wave.fire_at), col(Wave.id))
        ).all()
    for wave_id, campaign_id in due:
        _mark_running(engine, campaign_id, now=now)
        report.fired[wave_id] = expand_wave(engine, wave_id, now=now, chunk_size=chunk_size)
        log.info("wave %d fired: %d messages in the outbox", wave_id, report.fired[wave_id])
    _close_finished(engine, now=now, report=report)
    return report


def _mark_running(engine: Engine, campaign_id: int, *, now: datetime) -> None:
    with session_scope(engine) as session:
        moved = session.execute(
            update(Campaign)
            .where(
                col(Campaign.id) == campaign_id, col(Campaign.status) == CampaignStatus.SCHEDULED
            )
            .values(status=CampaignStatus.RUNNING, updated_at=now)
        ).rowcount  # type: ignore[attr-defined]
        if moved:
            audit.record(
                session,
                actor="scheduler",
                action="campaign.run",
                entity="campaign",
                entity_id=campaign_id,
                now=now,
                before={"status": "scheduled"},
                after={"status": "running"},
            )


def _close_finished(engine: Engine, *, now: datetime, report: TickReport) -> None:
    """A wave is done when nothing of it is left to send; a campaign when all its waves are done."""
    with session_scope(engine) as session:
        in_flight = exists(
            select(1).where(
                col(OutboxMessage.wave_id) == col(Wave.id), col(OutboxMessage.status).in_(IN_FLIGHT)
            )
        )
        report.waves_done = list(
            session.scalars(
                update(Wave)
                .where(col(Wave.status) == WaveStatus.EXPANDED, ~in_flight)
                .values(status=WaveStatus.DONE)
                .returning(col(Wave.id))
            )
        )
        unfinished = exists(
            select(1).where(
                col(Wave.campaign_id) == col(Campaign.id), col(Wave.status) != WaveStatus.DONE
            )
        )
        report.campaigns_completed = list(
            session.scalars(
                update(Campaign)
                .where(col(Campaign.status) == CampaignStatus.RUNNING, ~unfinished)
                .values(status=CampaignStatus.COMPLETED, completed_at=now, updated_at=now)
                .returning(col(Campaign.id))
            )
        )
        for campaign_id in report.campaigns_completed:
            audit.record(
                session,
                actor="scheduler",
                action="campaign.complete",
                entity="campaign",
                entity_id=campaign_id,
                now=now,
                before={"status": "running"},
                after={"status": "completed"},
            )
