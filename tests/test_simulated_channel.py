"""The simulated provider of the benchmarks: every message accepted once, with its own provider
id, no more calls at once than its concurrency (hence a lower bound on the time a batch takes)."""

import time
from datetime import UTC, datetime

from channels.base import Outcome, OutgoingMessage
from channels.simulated import SimulatedChannel


def test_accepts_every_message_once_with_distinct_provider_ids() -> None:
    channel = SimulatedChannel(latency_ms=1, concurrency=10)
    messages = [OutgoingMessage(i, 1, f"+8491200000{i % 10}", "x") for i in range(250)]
    results = channel.send_batch(messages, now=datetime.now(UTC))
    assert [r.message_id for r in results] == list(range(250))
    assert {r.outcome for r in results} == {Outcome.ACCEPTED}
    assert len({r.provider_id for r in results}) == 250


def test_never_more_calls_in_flight_than_its_concurrency() -> None:
    # Six calls of 50 ms, two at a time: three rounds, so at least 150 ms (a bound from below,
    # which a slow machine cannot break).
    channel = SimulatedChannel(latency_ms=50, concurrency=2)
    started = time.monotonic()
    channel.send_batch(
        [OutgoingMessage(i, 1, "+84912000001", "x") for i in range(6)], now=datetime.now(UTC)
    )
    assert time.monotonic() - started >= 0.15
