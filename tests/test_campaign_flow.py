"""The first slice as service calls with a clock the test moves: spec -> launch -> fire -> outbox ->
console channel -> delivery events -> stats. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select, update
from sqlmodel import col

from channels.registry import channel_lookup
from loa.db import session_scope
from loa.errors import Conflict
from loa.models import (
    AuditEntry,
    Campaign,
    DeliveryEvent,
    MessageStatus,
    OutboxMessage,
    Suppression,
    Wave,
)
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from scheduler.expand import expand_wave
from scheduler.lifecycle import approve_campaign, create_campaign, launch_campaign
from scheduler.spec import validate_spec
from scheduler.tick import run_tick
from stats.campaign import campaign_stats
from tests.builders import add_areas, add_recipient, launch
from tests.conftest import FakeClock

SPEC = {
    "name": "Tháng vận động BHXH 2026",
    "timezone": "Asia/Ho_Chi_Minh",
    "waves": [
        {
            "name": "Lễ ra quân",
            "channel": "sms",
            "class": "info",
            "at": "2026-05-08 07:30",  # 00:30 UTC
            "audience": {"areas": ["42"], "tags": ["nong-dan"]},
            "template": "BHXH: {{ name }} oi, thang 5 la Thang van dong BHXH toan dan.",
        }
    ],
}
FIRE_AT = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)


def _launch(engine: Engine, settings: Settings, clock: FakeClock) -> int:
    return launch(engine, SPEC, settings, clock())


def _launch_and_fire(engine: Engine, settings: Settings, clock: FakeClock) -> None:
    _launch(engine, settings, clock)
    clock.now = FIRE_AT
    run_tick(engine, now=clock(), settings=settings)


@pytest.fixture
def audience(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        add_recipient(session, "+84912000001", now=clock(), area="18301", tags=("nong-dan",))
        add_recipient(
            session,
            "+84912000002",
            now=clock(),
            area="18302",
            name="Trần Thị Bình",
            tags=("nong-dan", "ho-ngheo"),
        )
        add_recipient(session, "+84912000003", now=clock(), area="18301", tags=("nong-dan",))
        # Outside the audience: other province; right province but no matching tag.
        add_recipient(session, "+84912000004", now=clock(), area="16801", tags=("nong-dan",))
        add_recipient(session, "+84912000005", now=clock(), area="18301", tags=("ho-ngheo",))
        session.add(Suppression(phone="+84912000003", reason="opt_out", created_at=clock()))


def _sink_lines(settings: Settings) -> list[dict[str, object]]:
    assert settings.console_sink is not None
    if not settings.console_sink.exists():
        return []
    return [json.loads(line) for line in settings.console_sink.read_text("utf-8").splitlines()]


@pytest.mark.usefixtures("audience")
def test_wave_fires_at_its_time_and_every_message_goes_out_once(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    small_chunks = settings.model_copy(update={"expansion_chunk_size": 2})
    campaign_id = _launch(engine, settings, clock)
    lookup = channel_lookup(settings)

    clock.now = datetime(2026, 5, 8, 0, 29, tzinfo=UTC)
    assert run_tick(engine, now=clock(), settings=small_chunks).fired == {}
    assert (
        dispatch_once(engine, worker_id="w1", clock=clock, settings=settings, channel_for=lookup)
        == 0
    )

    clock.now = FIRE_AT
    report = run_tick(engine, now=clock(), settings=small_chunks)  # the expansion loops
    assert list(report.fired.values()) == [3]
    with session_scope(engine) as session:
        assert session.get(Campaign, campaign_id).status == "running"  # type: ignore[union-attr]

    # Re-running the expansion of a fired wave inserts nothing new.
    with session_scope(engine) as session:
        wave_id = next(iter(report.fired))
        session.execute(update(Wave).values(status="expanding"))
    assert expand_wave(engine, wave_id, now=clock(), chunk_size=2, due_at=FIRE_AT) == 3

    assert (
        dispatch_once(engine, worker_id="w1", clock=clock, settings=settings, channel_for=lookup)
        == 2
    )
    assert (
        dispatch_once(engine, worker_id="w2", clock=clock, settings=settings, channel_for=lookup)
        == 0
    )

    lines = _sink_lines(settings)
    assert sorted(str(line["to"]) for line in lines) == ["+84912000001", "+84912000002"]
    bodies = {line["to"]: line["body"] for line in lines}
    assert (
        bodies["+84912000002"] == "BHXH: Trần Thị Bình oi, thang 5 la Thang van dong BHXH toan dan."
    )
    assert all(
        line["wave_id"] == wave_id and line["sent_at"] == FIRE_AT.isoformat() for line in lines
    )

    with session_scope(engine) as session:
        stats = campaign_stats(session, campaign_id)
        events = session.execute(
            select(col(DeliveryEvent.kind), col(DeliveryEvent.status), func.count()).group_by(
                col(DeliveryEvent.kind), col(DeliveryEvent.status)
            )
        ).all()
        sent = session.scalars(
            select(OutboxMessage).where(col(OutboxMessage.status) == "sent")
        ).all()
    assert stats.total == 3
    assert stats.by_status["sent"] == 2
    assert stats.by_status["suppressed"] == 1
    assert stats.waves[0].by_status == stats.by_status
    assert sorted(events) == [("attempt", "sending", 2), ("status", "sent", 2)]
    assert all(
        m.provider_id and m.provider_id.startswith("console-") and m.attempts == 1 for m in sent
    )

    report = run_tick(engine, now=clock.advance(seconds=5), settings=settings)
    assert report.waves_done == [wave_id]
    assert report.campaigns_completed == [campaign_id]
    with session_scope(engine) as session:
        actions = session.scalars(select(col(AuditEntry.action)).order_by(col(AuditEntry.id))).all()
    assert actions == [
        "campaign.create",
        "campaign.approve",
        "campaign.launch",
        "campaign.run",
        "campaign.complete",
    ]


@pytest.mark.usefixtures("audience")
def test_opt_out_after_expansion_stops_the_message_at_send_time(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    _launch_and_fire(engine, settings, clock)
    with session_scope(engine) as session:
        session.add(Suppression(phone="+84912000001", reason="opt_out", created_at=clock()))
    dispatch_once(
        engine, worker_id="w1", clock=clock, settings=settings, channel_for=channel_lookup(settings)
    )
    assert [line["to"] for line in _sink_lines(settings)] == ["+84912000002"]
    with session_scope(engine) as session:
        suppressed_events = session.scalar(
            select(func.count())
            .select_from(DeliveryEvent)
            .where(col(DeliveryEvent.status) == "suppressed")
        )
    assert suppressed_events == 1


@pytest.mark.usefixtures("audience")
def test_a_dead_workers_claims_return_and_its_sends_become_unknown_never_resent(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    from scheduler.dispatch import begin_sending, claim_batch
    from scheduler.gate import sendable_wave_ids

    _launch_and_fire(engine, settings, clock)
    with session_scope(engine) as session:
        claimed = claim_batch(
            session,
            worker_id="dead",
            now=clock(),
            lease_seconds=60,
            limit=10,
            settings=settings,
            wave_ids=sendable_wave_ids(session, now=clock(), settings=settings),
        )
        # The dead worker had told the database it was sending the first one, then vanished.
        begin_sending(session, claimed[:1], worker_id="dead", now=clock())
    assert len(claimed) == 2

    clock.advance(seconds=30)  # lease still valid: nobody else may take them
    lookup = channel_lookup(settings)
    assert (
        dispatch_once(engine, worker_id="w2", clock=clock, settings=settings, channel_for=lookup)
        == 0
    )

    clock.advance(seconds=31)
    assert (
        dispatch_once(engine, worker_id="w2", clock=clock, settings=settings, channel_for=lookup)
        == 1
    )
    assert [line["message_id"] for line in _sink_lines(settings)] == [claimed[1].id]
    with session_scope(engine) as session:
        first = session.get(OutboxMessage, claimed[0].id)
        second = session.get(OutboxMessage, claimed[1].id)
    assert first is not None and second is not None
    assert (first.status, first.attempts) == (MessageStatus.UNKNOWN, 1)
    assert (second.status, second.attempts) == (MessageStatus.SENT, 1)


def test_launch_is_refused_before_approval_and_for_a_time_that_has_passed(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        campaign = create_campaign(
            session,
            spec=validate_spec(SPEC, source="test"),
            actor="planner",
            now=clock(),
            settings=settings,
        )
    assert campaign.id is not None
    with (
        pytest.raises(Conflict, match="is draft; launch needs it to be approved"),
        session_scope(engine) as session,
    ):
        launch_campaign(session, campaign.id, actor="x", now=clock(), settings=settings)
    with session_scope(engine) as session:
        approve_campaign(session, campaign.id, actor="approver", now=clock(), settings=settings)
    clock.now = datetime(2026, 5, 8, 1, 0, tzinfo=UTC)
    with pytest.raises(Conflict, match="which has passed"), session_scope(engine) as session:
        launch_campaign(session, campaign.id, actor="x", now=clock(), settings=settings)
    with session_scope(engine) as session:
        assert session.get(Campaign, campaign.id).status == "approved"  # type: ignore[union-attr]
        assert session.scalars(select(col(Wave.fire_at))).all() == [None]
