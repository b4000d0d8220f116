"""One pass of the active scheduler: make the occurrences of recurring and relative waves that
are due, fire the waves that are due (or expire them when the service was down too long),
expire the messages of occurrences that were not sent in time, move messages waiting for a send
window to its opening, sweep messages of cancelled campaigns to a final status, and close the
waves and campaigns that have finished."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, exists, select, update
from sqlmodel import Session, col

from broadcast.items import broadcast_finished, start_due_broadcasts
from loa import audit
from loa.db import session_scope
from loa.errors import LoaError
from loa.models import (
    Campaign,
    CampaignStatus,
    MessageStatus,
    OutboxMessage,
    Wave,
    WaveKind,
    WaveStatus,
)
from loa.settings import Settings
from scheduler.expand import expand_wave
from scheduler.gate import defer_closed_waves, wave_window
from scheduler.lifecycle import cancel_planned_messages
from scheduler.outbox import end_planned_messages
from scheduler.series import SeriesReport, make_due_occurrences
from scheduler.windows import next_open
from stats.prune import prune_zero_keys

if TYPE_CHECKING:  # broadcast/ imports the scheduler's modules
    from broadcast.push import PushTrigger

log = logging.getLogger(__name__)

# A wave is not finished while any of its messages may still go out: waiting, on its way, or
# `unknown` (reconciliation may find the channel never got it and plan it again; a wave closed
# before that would leave the re-planned message where no worker looks).
NOT_FINISHED = (
    MessageStatus.PLANNED,
    MessageStatus.CLAIMED,
    MessageStatus.SENDING,
    MessageStatus.UNKNOWN,
)


@dataclass
class TickReport:
    series: SeriesReport = field(default_factory=SeriesReport)
    fired: dict[int, int] = field(default_factory=dict)  # wave id -> outbox rows
    # Waves whose expansion was refused (e.g. their segment was deleted meanwhile): wave id ->
    # why. They stay due and are tried again next tick; the other waves go on.
    failed: dict[int, str] = field(default_factory=dict)
    expired: list[int] = field(default_factory=list)  # waves that fired too late to send
    lapsed: int = 0  # planned messages of occurrences past their expiry, expired now
    deferred: dict[int, datetime] = field(default_factory=dict)  # wave id -> window opening
    swept: int = 0  # planned messages of cancelled campaigns, cancelled now
    waves_done: list[int] = field(default_factory=list)
    campaigns_completed: list[int] = field(default_factory=list)


def run_tick(
    engine: Engine,
    *,
    now: datetime,
    settings: Settings,
    loudspeaker_push: PushTrigger | None = None,
) -> TickReport:
    """`loudspeaker_push` (when endpoints are configured) pushes changed playlists and new
    emergencies to loudspeaker controllers, after this tick's own work (broadcast/push.py)."""
    report = TickReport(series=make_due_occurrences(engine, now=now, settings=settings))
    late_after = timedelta(minutes=settings.late_after_minutes)
    with session_scope(engine) as session:
        due = session.execute(
            select(Wave, col(Campaign.timezone))
            .join(Campaign, col(Campaign.id) == col(Wave.campaign_id))
            .where(
                col(Wave.kind) == WaveKind.ONCE,
                col(Wave.status).in_([WaveStatus.SCHEDULED, WaveStatus.EXPANDING]),
                col(Wave.fire_at) <= now,
            )
            .order_by(col(Wave.fire_at), col(Wave.id))
        ).all()
    # A loudspeaker wave never fires (launching wrote its broadcast items); its campaign runs
    # from its first slot.
    for campaign_id in start_due_broadcasts(engine, now=now):
        _mark_running(engine, campaign_id, now=now)
    for wave, timezone in due:
        wave_id, fire_at = wave.id, wave.fire_at
        assert wave_id is not None and fire_at is not None
        ids = {"wave_id": wave_id, "campaign_id": wave.campaign_id}
        _mark_running(engine, wave.campaign_id, now=now)
        # Downtime: a wave starting this late would reach people hours after its time; an
        # occurrence past its expiry has been superseded.
        expired = now - fire_at > late_after or (
            wave.expires_at is not None and now >= wave.expires_at
        )
        first_send = next_open(fire_at, wave_window(wave, settings), ZoneInfo(timezone))
        try:
            report.fired[wave_id] = expand_wave(
                engine,
                wave_id,
                now=now,
                chunk_size=settings.expansion_chunk_size,
                due_at=first_send,
                expired=expired,
                qc_requires_consent=settings.qc_requires_consent,
            )
        except LoaError as exc:
            report.failed[wave_id] = exc.message
            log.error("wave %d cannot expand: %s", wave_id, exc.message, extra=ids)
            continue
        if expired:
            report.expired.append(wave_id)
            log.warning(
                "wave %d fired %s after its time: its messages expired",
                wave_id,
                now - fire_at,
                extra=ids,
            )
        else:
            log.info(
                "wave %d fired: %d messages in the outbox",
                wave_id,
                report.fired[wave_id],
                extra={**ids, "messages": report.fired[wave_id]},
            )
    with session_scope(engine) as session:
        report.lapsed = _expire_lapsed(session, now=now)
        report.deferred = defer_closed_waves(session, now=now, settings=settings)
    if report.lapsed:
        log.info("%d planned message(s) of lapsed occurrences expired", report.lapsed)
    for wave_id, opens in report.deferred.items():
        log.debug(
            "wave %d waits for its send window: %s", wave_id, opens, extra={"wave_id": wave_id}
        )
    report.swept = _sweep_cancelled(engine, now=now)
    _close_finished(engine, now=now, report=report)
    if loudspeaker_push is not None:
        loudspeaker_push.after_tick(engine, now=now)
    return report


def _expire_lapsed(session: Session, *, now: datetime) -> int:
    """Planned messages of occurrences whose time to be sent is over (the next occurrence is
    due, or the campaign was paused past it) expire rather than going out late."""
    lapsed = select(col(Wave.id)).where(
        col(Wave.status).in_([WaveStatus.EXPANDING, WaveStatus.EXPANDED]),
        col(Wave.expires_at) <= now,
    )
    return end_planned_messages(
        session,
        wave_ids=lapsed,
        status=MessageStatus.EXPIRED,
        detail="not sent before the occurrence expired",
        now=now,
    )


def _sweep_cancelled(engine: Engine, *, now: datetime) -> int:
    """Messages of cancelled campaigns that came back to `planned` (an expired claim, a retry)."""
    with session_scope(engine) as session:
        campaign_ids = session.scalars(
            select(col(Wave.campaign_id))
            .join(Campaign, col(Campaign.id) == col(Wave.campaign_id))
            .where(
                col(Campaign.status) == CampaignStatus.CANCELLED,
                exists(
                    select(1).where(
                        col(OutboxMessage.wave_id) == col(Wave.id),
                        col(OutboxMessage.status) == MessageStatus.PLANNED,
                    )
                ),
            )
            .distinct()
        ).all()
        return sum(cancel_planned_messages(session, cid, now=now) for cid in campaign_ids)


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
            log.info("campaign %d running", campaign_id, extra={"campaign_id": campaign_id})
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
                col(OutboxMessage.wave_id) == col(Wave.id),
                col(OutboxMessage.status).in_(NOT_FINISHED),
            )
        )
        report.waves_done = list(
            session.scalars(
                update(Wave)
                .where(col(Wave.status) == WaveStatus.EXPANDED, ~in_flight, broadcast_finished(now))
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
        # Their keys left at zero (claimed, sending...) will not be needed again.
        pruned = prune_zero_keys(session, report.waves_done)
        for wave_id in report.waves_done:
            log.info("wave %d done: nothing left to send", wave_id, extra={"wave_id": wave_id})
        if pruned:
            log.info("%d statistics keys at zero deleted", pruned)
        for campaign_id in report.campaigns_completed:
            log.info("campaign %d completed", campaign_id, extra={"campaign_id": campaign_id})
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
