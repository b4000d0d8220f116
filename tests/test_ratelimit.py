"""The shared rate limit: the one-second window, the long-run mean, pacing, clocks that disagree,
give-back, and dispatch held to the rate with the attempt events stamped as the limiter counted."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select
from sqlmodel import col

from channels.registry import channel_lookup
from loa.db import session_scope
from loa.models import DeliveryEvent
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from scheduler.ratelimit import Grant, give_back, slice_size, take_tokens
from tests.builders import add_areas, add_recipient, launch_and_fire
from tests.conftest import FakeClock

T0 = datetime(2026, 5, 8, 2, 0, tzinfo=UTC)
SECOND_US = 1_000_000


def _take(
    engine: Engine,
    want: int,
    at: datetime,
    *,
    rate: float = 10,
    burst: int = 20,
    horizon: float = 0.0,
    name: str = "sms",
) -> Grant:
    with session_scope(engine) as session:
        return take_tokens(
            session, name, want=want, rate=rate, burst=burst, now=at, horizon=horizon
        )


def _give_back(engine: Engine, grant: Grant, unused: int, *, burst: int, name: str = "sms") -> None:
    with session_scope(engine) as session:
        give_back(session, name, grant=grant, unused=unused, burst=burst)


def _ms(milliseconds: float) -> datetime:
    return T0 + timedelta(milliseconds=milliseconds)


def _us(instant: datetime) -> int:
    return (instant - T0) // timedelta(microseconds=1)


def _most_in_one_second(grants: list[tuple[int, int]]) -> int:
    """The most let go by grants (instant in us, count) whose instants span less than a second."""
    grants = sorted(grants)
    most = total = start = 0
    for at, count in grants:
        total += count
        while grants[start][0] <= at - SECOND_US:
            total -= grants[start][1]
            start += 1
        most = max(most, total)
    return most


def _greedy(
    engine: Engine, *, rate: float, burst: int, start: datetime, until: datetime, name: str
) -> list[tuple[int, int]]:
    """A taker always ready for the next grant (it waits for it): the most the limiter allows."""
    grants: list[tuple[int, int]] = []
    now = start
    while True:
        # Willing to wait for any grant before `until`, and for none at or after it.
        horizon = (until - now - timedelta(microseconds=1)).total_seconds()
        grant = _take(engine, 10_000, now, rate=rate, burst=burst, horizon=horizon, name=name)
        if grant.at >= until:
            assert grant.count == 0
            return grants
        assert grant.count > 0 and grant.at >= now
        grants.append((_us(grant.at), grant.count))
        now = grant.at


def test_grants_are_slices_paced_through_the_second(engine: Engine) -> None:
    # rate 10, burst 20: slices of 2, one every 2/20 s.
    assert slice_size(20) == 2 and slice_size(100) == 10 and slice_size(3) == 1
    assert _take(engine, 500, T0) == Grant(2, T0)
    refused = _take(engine, 500, T0)
    assert refused == Grant(0, _ms(100))  # not yet, and when
    assert _take(engine, 500, _ms(40), horizon=0.05) == Grant(0, _ms(100))  # 60 ms: too far
    assert _take(engine, 500, _ms(40), horizon=0.06) == Grant(2, _ms(100))  # worth the wait
    assert _take(engine, 1, _ms(200)) == Grant(1, _ms(200))  # a smaller want, a smaller step
    assert _take(engine, 500, _ms(230)) == Grant(0, _ms(250))


def test_a_burst_above_the_rate_lets_the_burst_go_once_then_the_rate(engine: Engine) -> None:
    rate, burst = 10, 30
    grants = _greedy(
        engine, rate=rate, burst=burst, start=T0, until=T0 + timedelta(seconds=60), name="b"
    )
    first_second = sum(c for at, c in grants if at < SECOND_US)
    assert first_second == burst
    assert _most_in_one_second(grants) == burst
    # After the burst, the bucket's refill: rate per second, to within one slice.
    later = sum(c for at, c in grants if at >= 10 * SECOND_US)
    assert abs(later - rate * 50) <= slice_size(burst)
    # No span of T seconds sees more than burst + rate * T.
    total = sum(c for _, c in grants)
    assert burst + rate * 59 <= total <= burst + rate * 60


def test_the_long_run_mean_is_the_rate_when_burst_equals_rate(engine: Engine) -> None:
    grants = _greedy(
        engine, rate=10, burst=10, start=T0, until=T0 + timedelta(seconds=60), name="m"
    )
    # One message every tenth of a second, on the dot: 600 in 60 s, 10 in every second.
    assert grants == [(k * 100_000, 1) for k in range(600)]
    assert _most_in_one_second(grants) == 10


def test_a_worker_whose_clock_is_behind_gets_nothing_before_the_latest_grant(
    engine: Engine,
) -> None:
    rate, burst = 10, 20
    # An idle bucket (its one grant given back): the grant still goes at the latest instant.
    unused = _take(engine, 500, T0, name="idle")
    _give_back(engine, unused, unused.count, burst=burst, name="idle")
    assert _take(engine, 500, _ms(-50), horizon=1.0, name="idle") == Grant(2, T0)

    first = _greedy(engine, rate=rate, burst=burst, start=T0, until=_ms(1000), name="sms")
    assert sum(c for _, c in first) == 20  # the burst; 9 tokens left at 0.9 s
    behind = T0 - timedelta(seconds=30)
    assert _take(engine, 500, behind, horizon=1.0) == Grant(0, _ms(1000))
    # Willing to wait, it is placed on the shared timeline, never back at its own clock.
    assert _take(engine, 500, behind, horizon=3600) == Grant(2, _ms(1000))
    # The refill counts from the latest grant, not from the clock behind: 8 tokens after the
    # grant at 1.0 s, then 10 per second: 8 more slices in [1.0 s, 2.0 s) (9 if it counted from
    # 30 s back).
    second = _greedy(engine, rate=rate, burst=burst, start=_ms(1000), until=_ms(2000), name="sms")
    assert len(second) == 8
    assert _most_in_one_second([*first, (1000 * 1000, 2), *second]) == burst


def test_give_back_returns_the_tokens_the_pace_and_the_window(engine: Engine) -> None:
    # rate 1, burst 2: slices of one, half a second apart.
    def take(at: datetime) -> Grant:
        return _take(engine, 5, at, rate=1, burst=2)

    assert take(T0) == Grant(1, T0)
    unused = take(_ms(500))
    assert unused == Grant(1, _ms(500))  # half a token left
    assert take(_ms(500)) == Grant(0, _ms(1000))
    _give_back(engine, unused, 1, burst=2)
    # As if it had never been taken: the token, the pace and the place in the window are back.
    assert take(_ms(500)) == Grant(1, _ms(500))
    # A return for a grant more than a second old changes the tokens only, within the burst.
    _give_back(engine, Grant(1, T0 - timedelta(seconds=5)), 1, burst=2)
    assert take(_ms(500)) == Grant(0, _ms(1000))


def test_give_back_frees_its_place_in_the_window_even_when_it_is_not_the_latest(
    engine: Engine,
) -> None:
    # rate 100, burst 20: slices of 2 every 0.1 s; the bucket never runs short.
    first = _take(engine, 1, T0, rate=100, burst=20)
    assert first == Grant(1, T0)
    grants = _greedy(engine, rate=100, burst=20, start=T0, until=_ms(950), name="sms")
    assert grants == [(k * 100_000 + 50_000, 2) for k in range(9)]
    # 1 + 18 in the window: a slice of 2 must wait for the first grant to leave it.
    assert _take(engine, 5, _ms(950), rate=100, burst=20) == Grant(0, _ms(1000))
    _give_back(engine, first, 1, burst=20)
    assert _take(engine, 5, _ms(950), rate=100, burst=20) == Grant(2, _ms(950))


@dataclass
class _Worker:
    skew: timedelta  # how far its clock is from the others'
    pending: list[tuple[Grant, int]]  # grants it has not yet given back the unused part of


def test_never_more_than_the_burst_in_any_second_however_the_takes_are_timed(
    engine: Engine,
) -> None:
    """Property-style: several workers with clocks that disagree take at random instants, want
    random amounts, wait or not, and give back random parts late; seeded, so reproducible."""
    for case, (rate, burst) in enumerate([(10, 10), (10, 35), (7.5, 8), (50, 50), (3, 12)]):
        rng = random.Random(case)
        name = f"p{case}"
        workers = [_Worker(timedelta(milliseconds=rng.uniform(-150, 150)), []) for _ in range(4)]
        used: list[tuple[int, int]] = []
        # Each return: the timeline's latest grant then, the returned grant's instant, the count.
        returns: list[tuple[int, int, int]] = []
        last_at = T0 - timedelta(days=1)
        now = T0
        for _ in range(250):
            now += timedelta(milliseconds=rng.choice([0, 0, 1, 7, 30, 90, 400]))
            worker = rng.choice(workers)
            clock = now + worker.skew
            horizon = rng.choice([0.0, 0.02, 0.1, 0.5])
            grant = _take(
                engine,
                rng.randint(1, 2 * slice_size(burst)),
                clock,
                rate=rate,
                burst=burst,
                horizon=horizon,
                name=name,
            )
            assert grant.at >= clock
            if grant.count:
                assert grant.at >= last_at  # one timeline, forward only
                assert grant.at <= clock + timedelta(seconds=horizon)
                last_at = grant.at
                worker.pending.append((grant, rng.choice([0, 0, 0, 1, grant.count])))
            if worker.pending and rng.random() < 0.5:
                back, unused = worker.pending.pop(0)
                _give_back(engine, back, unused, burst=burst, name=name)
                used.append((_us(back.at), back.count - unused))
                returns.append((_us(last_at), _us(back.at), unused))
        used += [(_us(g.at), g.count) for w in workers for g, _ in w.pending]
        assert sum(c for _, c in used) > 3 * burst  # enough happened to test something
        assert _most_in_one_second(used) <= burst, (rate, burst)
        # The bucket: grants within a span of T seconds let at most burst + rate * T go, plus
        # what grants before the span gave back during it (a return counts as if the grant had
        # been smaller; in dispatch it comes milliseconds after the grant).
        used.sort()
        for i, (start, _) in enumerate(used):
            late = sorted((tl, u) for tl, g, u in returns if g < start <= tl)
            total = returned = r = 0
            for at, count in used[i:]:
                total += count
                while r < len(late) and late[r][0] <= at:
                    returned += late[r][1]
                    r += 1
                allowed = burst + rate * (at - start) / SECOND_US + returned
                assert total <= allowed + 1e-6, (rate, burst)


def _wave_of(engine: Engine, settings: Settings, clock: FakeClock, recipients: int) -> Settings:
    """A fired wave of `recipients` SMS, and settings of 10 per second, burst 10."""
    with session_scope(engine) as session:
        add_areas(session)
        for i in range(recipients):
            add_recipient(session, f"+849120000{i:02d}", now=clock())
    launch_and_fire(engine, settings, at="2026-05-08 09:00", fire_at=T0, launched_at=clock())
    clock.now = T0
    return settings.model_copy(
        update={"sms_rate_per_second": 10, "sms_burst": 10, "worker_batch_size": 500}
    )


def _dispatcher(
    engine: Engine, settings: Settings, clock: FakeClock
) -> Callable[[str, Callable[[float], object]], int]:
    lookup = channel_lookup(settings)

    def dispatch(worker: str, sleep: Callable[[float], object]) -> int:
        return dispatch_once(
            engine,
            worker_id=worker,
            clock=clock,
            settings=settings,
            channel_for=lookup,
            sleep=sleep,
        )

    return dispatch


def _attempts(engine: Engine) -> list[int]:
    with session_scope(engine) as session:
        return sorted(
            _us(a)
            for a in session.scalars(
                select(col(DeliveryEvent.occurred_at)).where(col(DeliveryEvent.kind) == "attempt")
            )
        )


def test_dispatch_across_workers_keeps_to_the_rate(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = _wave_of(engine, settings, clock, 45)
    dispatch = _dispatcher(engine, settings, clock)

    def oversleep(seconds: float) -> None:  # like a real sleep, by 3 ms
        clock.advance(seconds=seconds + 0.003)

    # Three workers in turn, each waiting for its grant (a slice of one message every 0.1 s);
    # when none gets anything they poll again later.
    while True:
        claimed = [dispatch(w, oversleep) for w in ("a", "b", "c")]
        if not any(claimed):
            if clock.now > T0 + timedelta(seconds=10):
                break
            clock.advance(seconds=settings.worker_poll_seconds)
    # Each attempt is stamped with its grant's instant (not the later moment the worker woke):
    # one every tenth of a second from T0, as before the slices came (10 per second).
    attempts = _attempts(engine)
    assert attempts == [k * 100_000 for k in range(45)]
    per_second = Counter(a // SECOND_US for a in attempts)
    assert [per_second[s] for s in range(6)] == [10, 10, 10, 10, 5, 0]


def test_a_loop_woken_before_its_instant_sends_nothing_and_gives_its_grant_back(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = _wave_of(engine, settings, clock, 3)
    dispatch = _dispatcher(engine, settings, clock)

    def sleep(seconds: float) -> None:
        clock.advance(seconds=seconds)

    assert dispatch("a", sleep) == 1  # at T0
    assert dispatch("b", lambda seconds: None) == 0  # its turn was T0 + 0.1 s: woken at T0
    assert _attempts(engine) == [0]
    assert dispatch("c", sleep) == 1  # the turn given back goes to the next loop
    assert _attempts(engine) == [0, 100_000]
