"""Messages whose outcome a crash lost are settled by asking the channel, never re-sent blindly."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlmodel import col

from channels.base import Capabilities, Channel, Outcome, OutgoingMessage, SendResult
from channels.console import ConsoleChannel
from channels.registry import channel_lookup
from loa.db import session_scope
from loa.models import Campaign, DeliveryEvent, OutboxMessage, Wave
from loa.settings import Settings
from scheduler.dispatch import begin_sending, claim_batch, dispatch_once, release_expired_leases
from scheduler.gate import sendable_wave_ids
from scheduler.reconcile import reconcile_unknown
from scheduler.tick import run_tick
from tests.builders import add_areas, add_recipient, launch_and_fire
from tests.conftest import FakeClock

FIRE_AT = datetime(2026, 5, 8, 2, 0, tzinfo=UTC)  # 09:00 in Vietnam


def _crash_mid_batch(engine: Engine, settings: Settings, clock: FakeClock) -> list[int]:
    """Two messages marked `sending` by a worker that then died; the channel got only the first."""
    with session_scope(engine) as session:
        add_areas(session)
        add_recipient(session, "+84912000001", now=clock())
        add_recipient(session, "+84912000002", now=clock())
    launch_and_fire(engine, settings, at="2026-05-08 09:00", fire_at=FIRE_AT, launched_at=clock())
    clock.now = FIRE_AT
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
        begin_sending(session, claimed, worker_id="dead", now=clock())
    first = claimed[0]
    ConsoleChannel(settings.console_sink).send_batch(
        [OutgoingMessage(first.id, first.wave_id, first.phone, "x")], now=clock()
    )
    clock.advance(seconds=61)
    with session_scope(engine) as session:
        release_expired_leases(session, now=clock())
    return [m.id for m in claimed]


def _status(engine: Engine) -> dict[int, str]:
    with session_scope(engine) as session:
        return dict(session.execute(select(col(OutboxMessage.id), col(OutboxMessage.status))).all())


def test_the_channel_settles_unknown_messages_and_each_goes_out_once(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(update={"lease_seconds": 60})
    first, second = _crash_mid_batch(engine, settings, clock)
    assert _status(engine) == {first: "unknown", second: "unknown"}

    lookup = channel_lookup(settings)
    # Just unknown: a slow worker might still record them, so nobody asks yet.
    report = reconcile_unknown(engine, channel_for=lookup, now=clock(), settings=settings)
    assert (report.sent, report.replanned) == (0, 0)

    clock.advance(seconds=60)
    report = reconcile_unknown(engine, channel_for=lookup, now=clock(), settings=settings)
    assert (report.sent, report.replanned, report.still_unknown) == (1, 1, 0)
    assert _status(engine) == {first: "sent", second: "planned"}
    assert (
        dispatch_once(engine, worker_id="w2", clock=clock, settings=settings, channel_for=lookup)
        == 1
    )

    assert settings.console_sink is not None
    lines = [json.loads(x) for x in settings.console_sink.read_text("utf-8").splitlines()]
    assert sorted(x["message_id"] for x in lines) == [first, second]
    with session_scope(engine) as session:
        provider_id = session.scalar(
            select(col(OutboxMessage.provider_id)).where(col(OutboxMessage.id) == first)
        )
        details = session.scalars(
            select(col(DeliveryEvent.detail))
            .where(col(DeliveryEvent.detail).like("reconciled%"))
            .order_by(col(DeliveryEvent.id))
        ).all()
    assert provider_id == next(x["provider_id"] for x in lines if x["message_id"] == first)
    assert details == [
        "reconciled: the channel has it",
        "reconciled: the channel never received it; planned again",
    ]
    # A second pass finds nothing left to settle and writes nothing.
    clock.advance(seconds=120)
    assert reconcile_unknown(engine, channel_for=lookup, now=clock(), settings=settings).sent == 0
    with session_scope(engine) as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(DeliveryEvent)
                .where(col(DeliveryEvent.detail).like("reconciled%"))
            )
            == 2
        )


def test_a_wave_with_unknown_messages_stays_open_until_they_are_settled(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(update={"lease_seconds": 60})
    _crash_mid_batch(engine, settings, clock)

    def statuses() -> tuple[str, str]:
        with session_scope(engine) as session:
            wave = session.scalars(select(Wave)).one()
            campaign = session.get(Campaign, wave.campaign_id)
            assert campaign is not None
            return wave.status, campaign.status

    run_tick(engine, now=clock(), settings=settings)
    assert statuses() == ("expanded", "running")
    clock.advance(seconds=60)
    lookup = channel_lookup(settings)
    reconcile_unknown(engine, channel_for=lookup, now=clock(), settings=settings)
    run_tick(engine, now=clock(), settings=settings)
    # The re-planned message is still to send: the wave stays open and a worker finds it.
    assert statuses() == ("expanded", "running")
    dispatch_once(engine, worker_id="w2", clock=clock, settings=settings, channel_for=lookup)
    run_tick(engine, now=clock(), settings=settings)
    assert statuses() == ("done", "completed")


class Forgetful:
    """A channel with no record of what it received."""

    name = "forgetful"
    capabilities = Capabilities(
        max_batch=None, status_callbacks=False, lookup=False, max_body_chars=1600
    )

    def send_batch(self, messages: Sequence[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        return [SendResult(m.message_id, Outcome.ACCEPTED) for m in messages]


def test_a_channel_that_cannot_tell_leaves_them_unknown(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    first, second = _crash_mid_batch(engine, settings, clock)
    clock.advance(seconds=600)

    def lookup(_: str) -> Channel:
        return Forgetful()

    report = reconcile_unknown(engine, channel_for=lookup, now=clock(), settings=settings)
    assert (report.sent, report.replanned, report.still_unknown) == (0, 0, 2)
    assert _status(engine) == {first: "unknown", second: "unknown"}


def test_console_sink_survives_a_torn_write(tmp_path: Path) -> None:
    sink = tmp_path / "sink.jsonl"
    # What a writer killed mid-write leaves: whole lines, then a fragment with no newline.
    sink.write_bytes(
        b'{"message_id": 1, "provider_id": "console-a"}\n{"message_id": 2, "provider_id": "con'
    )
    channel = ConsoleChannel(sink)
    channel.send_batch([OutgoingMessage(2, 9, "+84912000002", "x")], now=FIRE_AT)
    lines = sink.read_text("utf-8").splitlines()
    assert lines[1] == '{"message_id": 2, "provider_id": "con'  # the fragment stands alone
    assert json.loads(lines[2])["message_id"] == 2
    found = channel.lookup([1, 2, 3])
    assert found[1] == "console-a"
    assert found[2] == json.loads(lines[2])["provider_id"]  # from the whole line, not the fragment
    assert found[3] is None
    assert ConsoleChannel(None).lookup([1]) == {}  # stdout keeps no record: cannot tell
