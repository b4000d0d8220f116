"""Failover between SMS adapters (LOA_SMS_CHANNEL="gateway:first,gateway:second"), with two real
HTTP aggregators on loopback, through the dispatcher, on both databases: a first adapter that
refuses the account sends everything to the second, none twice; a run of transient failures
switches, and the cool-down brings the first back; a message the first may have taken (an
ambiguous answer) never goes through the second, not even by reconciliation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlmodel import col

from channels.base import Routing
from channels.registry import channel_lookup
from loa.db import session_scope
from loa.models import DeliveryEvent, OutboxMessage
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from scheduler.reconcile import reconcile_unknown
from tests.builders import add_areas, add_recipient, launch_and_fire, outbox_counts
from tests.conftest import FakeClock
from tests.gateway_stub import GATEWAY_ENV, Stub, code, gateway_entry, running, write_gateways

FIRE_AT = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)


@pytest.fixture
def stubs() -> Iterator[tuple[Stub, Stub]]:
    with running(Stub()) as first, running(Stub()) as second:
        yield first, second


def _setup(
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stubs: tuple[Stub, Stub],
    *,
    recipients: int,
    **override: Any,
) -> Settings:
    for key, value in GATEWAY_ENV.items():
        monkeypatch.setenv(key, value)
    first, second = stubs
    path = write_gateways(
        tmp_path / "gw.yaml",
        {"first": gateway_entry(first.url), "second": gateway_entry(second.url)},
    )
    fo_settings = settings.model_copy(
        update={
            "sms_channel": "gateway:first,gateway:second",
            "gateways_file": path,
            "public_url": "https://loa.example.vn",
            "retry_base_seconds": 0,  # a transient failure is due again at once
            "failover_after_failures": 3,
            "failover_cooldown_seconds": 600,
            **override,
        }
    )
    with session_scope(engine) as session:
        add_areas(session)
        for n in range(recipients):
            add_recipient(session, f"+8491200{n:04d}", now=clock())
    launch_and_fire(
        engine, fo_settings, at="2026-05-08 07:30", fire_at=FIRE_AT, launched_at=clock()
    )
    clock.now = FIRE_AT
    return fo_settings


def _drain(engine: Engine, settings: Settings, clock: FakeClock, lookup: Any) -> int:
    rounds = 0
    while dispatch_once(engine, worker_id="w", clock=clock, settings=settings, channel_for=lookup):
        rounds += 1
        assert rounds < 20
    return rounds


def _adapters(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as session:
        rows = session.execute(select(col(OutboxMessage.status), col(OutboxMessage.adapter))).all()
    counts: dict[str, int] = {}
    for status, adapter in rows:
        counts[f"{status} {adapter}"] = counts.get(f"{status} {adapter}", 0) + 1
    return counts


def _once_each(stub: Stub, engine: Engine) -> bool:
    """The aggregator got each outbox message exactly once."""
    with session_scope(engine) as session:
        ids = session.scalars(select(col(OutboxMessage.id))).all()
    return sorted(r["requestId"] for r in stub.requests) == sorted(f"loa-{i}" for i in ids)


def test_a_first_adapter_refusing_the_account_sends_everything_through_the_second(
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stubs: tuple[Stub, Stub],
) -> None:
    first, second = stubs
    first.answer = lambda phone: (401, {"code": "01", "message": "bad key"}, {})
    fo_settings = _setup(engine, settings, clock, tmp_path, monkeypatch, stubs, recipients=5)
    lookup = channel_lookup(fo_settings)
    assert _drain(engine, fo_settings, clock, lookup) == 2  # one refused batch, one through second
    assert _adapters(engine) == {"sent gateway:second": 5}
    assert first.taken == {} and len(first.requests) == 5
    assert _once_each(second, engine) and len(second.taken) == 5
    # Each message's events say which adapter each attempt went through.
    with session_scope(engine) as session:
        attempts = session.execute(
            select(col(DeliveryEvent.message_id), col(DeliveryEvent.adapter))
            .where(col(DeliveryEvent.kind) == "attempt")
            .order_by(col(DeliveryEvent.id))
        ).all()
    per_message: dict[int, list[str]] = {}
    for message_id, adapter in attempts:
        per_message.setdefault(message_id, []).append(adapter)
    assert set(map(tuple, per_message.values())) == {("gateway:first", "gateway:second")}


def test_a_run_of_transient_failures_switches_and_the_cool_down_brings_the_first_back(
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stubs: tuple[Stub, Stub],
) -> None:
    first, second = stubs
    first.answer = lambda phone: code("05", "carrier busy")
    fo_settings = _setup(
        engine, settings, clock, tmp_path, monkeypatch, stubs, recipients=6, worker_batch_size=2
    )
    lookup = channel_lookup(fo_settings)
    channel = lookup("sms")
    assert isinstance(channel, Routing)
    # Two batches of two fail: 4 >= 3 failures in a row, and the first is out of service.
    for _ in range(2):
        assert dispatch_once(
            engine, worker_id="w", clock=clock, settings=fo_settings, channel_for=lookup
        )
    assert len(first.requests) == 4 and not second.requests
    assert channel.route(clock()) == "gateway:second"
    _drain(engine, fo_settings, clock, lookup)
    assert _adapters(engine) == {"sent gateway:second": 6}
    assert _once_each(second, engine)
    assert len(first.requests) == 4 and first.taken == {}
    # After the cool-down the first is tried again; it now accepts, and stays in service.
    clock.advance(seconds=fo_settings.failover_cooldown_seconds - 1)
    assert channel.route(clock()) == "gateway:second"
    clock.advance(seconds=1)
    assert channel.route(clock()) == "gateway:first"


def test_an_ambiguous_answer_on_the_first_never_goes_through_the_second(
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stubs: tuple[Stub, Stub],
) -> None:
    first, _ = stubs
    first.answer = lambda phone: "take_then_fail"  # queued it, then answered 500
    # The second adapter is the console: it could answer reconciliation ("never received it"),
    # which would plan the message again, through itself, a second time.
    sink = tmp_path / "console.jsonl"
    fo_settings = _setup(
        engine,
        settings,
        clock,
        tmp_path,
        monkeypatch,
        stubs,
        recipients=4,
        sms_channel="gateway:first,console",
        console_sink=sink,
    )
    lookup = channel_lookup(fo_settings)
    assert _drain(engine, fo_settings, clock, lookup) == 1
    assert _adapters(engine) == {"unknown gateway:first": 4}
    channel = lookup("sms")
    assert isinstance(channel, Routing)
    assert channel.route(clock()) == "console"  # the first is out of service now
    clock.advance(seconds=fo_settings.lease_seconds + 1)
    report = reconcile_unknown(engine, channel_for=lookup, now=clock(), settings=fo_settings)
    assert (report.sent, report.replanned, report.still_unknown) == (0, 0, 4)
    assert _drain(engine, fo_settings, clock, lookup) == 0
    assert outbox_counts(engine) == {"unknown": 4}
    assert not sink.exists() or sink.read_text() == ""
    assert len(first.taken) == 4 and _once_each(first, engine)


def test_reconciliation_asks_the_adapter_that_had_the_message(
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stubs: tuple[Stub, Stub],
) -> None:
    """The console as the second adapter, carrying messages whose outcome is then lost: the
    console is asked about them (it has them), and they are settled as sent, not re-sent."""
    first, _ = stubs
    first.answer = lambda phone: (403, b"forbidden", {})
    sink = tmp_path / "console.jsonl"
    fo_settings = _setup(
        engine,
        settings,
        clock,
        tmp_path,
        monkeypatch,
        stubs,
        recipients=3,
        sms_channel="gateway:first,console",
        console_sink=sink,
    )
    lookup = channel_lookup(fo_settings)
    _drain(engine, fo_settings, clock, lookup)
    assert _adapters(engine) == {"sent console": 3}
    # As if the worker had died after the console took them: the outcome is lost.
    with session_scope(engine) as session:
        session.execute(update(OutboxMessage).values(status="unknown", updated_at=clock()))
    clock.advance(seconds=fo_settings.lease_seconds + 1)
    report = reconcile_unknown(engine, channel_for=lookup, now=clock(), settings=fo_settings)
    assert (report.sent, report.replanned, report.still_unknown) == (3, 0, 0)
    assert len(sink.read_text().splitlines()) == 3
