"""What may be sent when, through the real dispatcher on both databases: send windows at their
boundaries, pause, lateness after downtime, the claim's batch limit, and the sweep after cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlmodel import col

from channels.registry import channel_lookup
from loa.db import session_scope
from loa.models import OutboxMessage
from loa.settings import Settings
from scheduler.dispatch import claim_batch, dispatch_once
from scheduler.gate import sendable_wave_ids
from scheduler.lifecycle import cancel_campaign, pause_campaign, resume_campaign
from scheduler.tick import run_tick
from tests.builders import add_areas, add_consent, add_recipient, launch, outbox_counts
from tests.conftest import FakeClock

VN = timedelta(hours=7)  # Asia/Ho_Chi_Minh is UTC+7 all year


def local(text: str) -> datetime:
    """A Vietnamese wall-clock time as the UTC instant it is."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC) - VN


def _campaign(
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    *,
    at: str,
    message_class: str = "qc",
    recipients: int = 3,
) -> int:
    with session_scope(engine) as session:
        add_areas(session)
        for i in range(recipients):
            add_recipient(session, f"+8491200000{i}", now=clock())
            add_consent(session, f"+8491200000{i}", now=clock())
    wave: dict[str, Any] = {
        "name": "W",
        "channel": "sms",
        "class": message_class,
        "at": at,
        "audience": {"areas": ["42"]},
        "template": "[QC] x. Tu choi: soan TU CHOI gui 789",
        "brandname": "BHXH",
    }
    return launch(engine, {"name": "C", "waves": [wave]}, settings, clock())


def _dispatch(engine: Engine, settings: Settings, clock: FakeClock) -> int:
    return dispatch_once(
        engine, worker_id="w", clock=clock, settings=settings, channel_for=channel_lookup(settings)
    )


def test_qc_waits_for_0700_and_stops_at_2200(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(update={"worker_batch_size": 1})
    clock.now = local("2026-05-07 12:00")
    _campaign(engine, settings, clock, at="2026-05-08 06:30")

    clock.now = local("2026-05-08 06:30")
    run_tick(engine, now=clock(), settings=settings)
    clock.now = local("2026-05-08 06:59:59")
    assert _dispatch(engine, settings, clock) == 0
    clock.now = local("2026-05-08 07:00:00")
    assert _dispatch(engine, settings, clock) == 1

    clock.now = local("2026-05-08 21:59:59")
    assert _dispatch(engine, settings, clock) == 1
    clock.now = local("2026-05-08 22:00:00")
    assert _dispatch(engine, settings, clock) == 0
    report = run_tick(engine, now=clock(), settings=settings)
    assert list(report.deferred.values()) == [local("2026-05-09 07:00")]
    with session_scope(engine) as session:
        waiting = session.scalars(
            select(col(OutboxMessage.due_at)).where(col(OutboxMessage.status) == "planned")
        ).all()
    assert waiting == [local("2026-05-09 07:00")]  # moved out of the way, not dropped

    clock.now = local("2026-05-09 06:59:59")
    assert _dispatch(engine, settings, clock) == 0
    clock.now = local("2026-05-09 07:00:00")
    assert _dispatch(engine, settings, clock) == 1
    assert outbox_counts(engine) == {"sent": 3}


def test_pause_stops_unclaimed_messages_at_once_and_resume_sends_them(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(update={"worker_batch_size": 1})
    campaign_id = _campaign(engine, settings, clock, at="2026-05-08 09:00", message_class="info")
    clock.now = local("2026-05-08 09:00")
    run_tick(engine, now=clock(), settings=settings)
    assert _dispatch(engine, settings, clock) == 1
    with session_scope(engine) as session:
        pause_campaign(session, campaign_id, actor="a", now=clock())
    assert _dispatch(engine, settings, clock) == 0
    with session_scope(engine) as session:
        resume_campaign(session, campaign_id, actor="a", now=clock())
    assert _dispatch(engine, settings, clock) == 1
    assert _dispatch(engine, settings, clock) == 1
    assert outbox_counts(engine) == {"sent": 3}


def test_a_wave_fired_late_after_downtime_expires_instead_of_sending(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(update={"late_after_minutes": 120})
    campaign_id = _campaign(engine, settings, clock, at="2026-05-08 09:00", message_class="info")
    clock.now = local("2026-05-08 11:00:01")  # the scheduler was down for two hours and a second
    report = run_tick(engine, now=clock(), settings=settings)
    assert report.expired == list(report.fired)
    assert report.campaigns_completed == [campaign_id]  # nothing left to send: done at once
    assert _dispatch(engine, settings, clock) == 0
    assert outbox_counts(engine) == {"expired": 3}


def test_a_wave_fired_within_its_lateness_still_sends(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    _campaign(engine, settings, clock, at="2026-05-08 09:00", message_class="info")
    clock.now = local("2026-05-08 10:59:59")
    assert run_tick(engine, now=clock(), settings=settings).expired == []
    assert _dispatch(engine, settings, clock) == 3


def test_a_claim_takes_exactly_its_batch(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    _campaign(engine, settings, clock, at="2026-05-08 09:00", message_class="info", recipients=7)
    clock.now = local("2026-05-08 09:00")
    run_tick(engine, now=clock(), settings=settings)
    with session_scope(engine) as session:
        waves = sendable_wave_ids(session, now=clock(), settings=settings)
        first = claim_batch(
            session,
            worker_id="a",
            now=clock(),
            lease_seconds=60,
            limit=2,
            settings=settings,
            wave_ids=waves,
        )
        second = claim_batch(
            session,
            worker_id="b",
            now=clock(),
            lease_seconds=60,
            limit=3,
            settings=settings,
            wave_ids=waves,
        )
    assert (len(first), len(second)) == (2, 3)
    assert not {m.id for m in first} & {m.id for m in second}
    assert outbox_counts(engine) == {"claimed": 5, "planned": 2}


def test_messages_that_return_to_planned_after_cancel_are_swept_to_cancelled(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    campaign_id = _campaign(engine, settings, clock, at="2026-05-08 09:00", message_class="info")
    clock.now = local("2026-05-08 09:00")
    run_tick(engine, now=clock(), settings=settings)
    with session_scope(engine) as session:
        claim_batch(
            session,
            worker_id="gone",
            now=clock(),
            lease_seconds=60,
            limit=1,
            settings=settings,
            wave_ids=sendable_wave_ids(session, now=clock(), settings=settings),
        )
        result = cancel_campaign(session, campaign_id, actor="a", now=clock())
    assert result.messages_cancelled == 2
    clock.advance(seconds=61)  # the claimer died; its lease expires and the claim returns
    assert _dispatch(engine, settings, clock) == 0  # nothing of a cancelled campaign is sent
    assert outbox_counts(engine) == {"cancelled": 2, "planned": 1}
    assert run_tick(engine, now=clock(), settings=settings).swept == 1
    assert outbox_counts(engine) == {"cancelled": 3}
