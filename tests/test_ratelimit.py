"""The shared token bucket: refill, burst, clocks that disagree, and dispatch held to the rate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from channels.registry import channel_lookup
from loa.db import session_scope
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from scheduler.ratelimit import give_back, take_tokens
from tests.builders import add_areas, add_recipient, launch_and_fire
from tests.conftest import FakeClock

T0 = datetime(2026, 5, 8, 2, 0, tzinfo=UTC)


def _take(engine: Engine, want: int, at: datetime, rate: float = 10, burst: int = 20) -> int:
    with session_scope(engine) as session:
        return take_tokens(session, "sms", want=want, rate=rate, burst=burst, now=at)


def test_bucket_starts_full_refills_at_its_rate_and_never_beyond_burst(engine: Engine) -> None:
    assert _take(engine, 500, T0) == 20
    assert _take(engine, 500, T0) == 0
    assert _take(engine, 500, T0 + timedelta(seconds=0.5)) == 5
    assert _take(engine, 3, T0 + timedelta(seconds=1)) == 3  # 5 refilled, 3 taken, 2 left
    assert _take(engine, 500, T0 + timedelta(seconds=1)) == 2
    assert _take(engine, 500, T0 + timedelta(hours=1)) == 20  # a long pause refills to burst only
    with session_scope(engine) as session:
        give_back(session, "sms", tokens=7, burst=20)
    assert _take(engine, 500, T0 + timedelta(hours=1)) == 7


def test_a_worker_whose_clock_is_behind_gets_no_refill(engine: Engine) -> None:
    assert _take(engine, 500, T0) == 20
    assert _take(engine, 500, T0 - timedelta(seconds=30)) == 0
    assert _take(engine, 500, T0 + timedelta(seconds=1)) == 10  # refill counts from T0, not T0-30


def test_dispatch_across_workers_keeps_to_the_rate(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(
        update={"sms_rate_per_second": 10, "sms_burst": 10, "worker_batch_size": 500}
    )
    with session_scope(engine) as session:
        add_areas(session)
        for i in range(45):
            add_recipient(session, f"+849120000{i:02d}", now=clock())
    launch_and_fire(engine, settings, at="2026-05-08 09:00", fire_at=T0, launched_at=clock())
    clock.now = T0
    lookup = channel_lookup(settings)

    def dispatch(worker: str) -> int:
        return dispatch_once(
            engine, worker_id=worker, clock=clock, settings=settings, channel_for=lookup
        )

    sent_per_second = []
    for _ in range(6):
        sent_per_second.append(dispatch("a") + dispatch("b") + dispatch("c"))
        clock.advance(seconds=1)
    assert sent_per_second == [10, 10, 10, 10, 5, 0]
