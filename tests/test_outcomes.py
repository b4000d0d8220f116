"""What the dispatcher does with each kind of channel answer, recorded in one statement per batch,
on both databases: accepted -> sent, permanent -> failed, ambiguous -> unknown, transient -> retried
later with backoff until max_attempts, then failed."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlmodel import col

from channels.base import Capabilities, Channel, Outcome, OutgoingMessage, SendResult
from loa.db import session_scope
from loa.models import DeliveryEvent, OutboxMessage
from loa.settings import Settings
from scheduler.backoff import retry_delay
from scheduler.dispatch import dispatch_once
from tests.builders import add_areas, add_recipient, launch_and_fire
from tests.conftest import FakeClock

FIRE_AT = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)


class ScriptedChannel:
    """Answers by the recipient's last digit: 1 accepted, 2 permanent, 3 ambiguous, 4 transient."""

    name = "scripted"
    capabilities = Capabilities(
        max_batch=None, status_callbacks=False, lookup=False, max_body_chars=1600
    )

    def __init__(self) -> None:
        self.calls: list[str] = []

    def send_batch(self, messages: Sequence[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        answers = []
        for m in messages:
            self.calls.append(m.to)
            kind = m.to[-1]
            if kind == "1":
                answers.append(SendResult(m.message_id, Outcome.ACCEPTED, provider_id=f"p-{m.to}"))
            elif kind == "2":
                answers.append(SendResult(m.message_id, Outcome.PERMANENT, error_code="21211"))
            elif kind == "3":
                answers.append(SendResult(m.message_id, Outcome.AMBIGUOUS, detail="timeout"))
            else:
                answers.append(
                    SendResult(m.message_id, Outcome.TRANSIENT, error_code="20429", retry_after=5)
                )
        return answers


def _status(engine: Engine) -> dict[str, tuple[str, int, str | None, datetime]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(
                col(OutboxMessage.recipient_id),
                col(OutboxMessage.status),
                col(OutboxMessage.attempts),
                col(OutboxMessage.error_code),
                col(OutboxMessage.due_at),
            )
        ).all()
    return {f"r{r[0]}": (r[1], r[2], r[3], r[4]) for r in rows}


def test_each_outcome_lands_in_its_status_and_transients_back_off(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(
        update={"max_attempts": 3, "retry_base_seconds": 60, "retry_max_seconds": 3600}
    )
    with session_scope(engine) as session:
        add_areas(session)
        for last in "1234":
            add_recipient(session, f"+8491200000{last}", now=clock())
    launch_and_fire(engine, settings, at="2026-05-08 07:30", fire_at=FIRE_AT, launched_at=clock())
    clock.now = FIRE_AT
    channel = ScriptedChannel()

    def lookup(_: str) -> Channel:
        return channel

    def dispatch() -> int:
        return dispatch_once(
            engine, worker_id="w", clock=clock, settings=settings, channel_for=lookup
        )

    assert dispatch() == 4
    status = _status(engine)
    assert status["r1"][:3] == ("sent", 1, None)
    assert status["r2"][:3] == ("failed", 1, "21211")
    assert status["r3"][:3] == ("unknown", 1, None)
    assert status["r4"][:3] == ("planned", 1, "20429")
    first_retry = status["r4"][3]
    # Attempt 1: jittered within [30, 60] s of now, and never before the provider's hint of 5 s.
    assert FIRE_AT + timedelta(seconds=30) <= first_retry <= FIRE_AT + timedelta(seconds=60)

    clock.now = first_retry - timedelta(seconds=1)
    assert dispatch() == 0  # not yet due: the stored due time compares correctly in the database
    clock.now = first_retry
    assert dispatch() == 1
    second = _status(engine)["r4"]
    assert second[:2] == ("planned", 2)
    assert first_retry + timedelta(seconds=60) <= second[3] <= first_retry + timedelta(seconds=120)

    clock.now = second[3]
    assert dispatch() == 1
    assert _status(engine)["r4"][:3] == ("failed", 3, "20429")
    assert channel.calls.count("+84912000001") == 1  # the sent and the unknown never go again
    assert channel.calls.count("+84912000003") == 1
    assert channel.calls.count("+84912000004") == 3

    with session_scope(engine) as session:
        gave_up = session.scalars(
            select(col(DeliveryEvent.detail)).where(
                col(DeliveryEvent.status) == "failed", col(DeliveryEvent.error_code) == "20429"
            )
        ).all()
        kinds = session.execute(
            select(col(DeliveryEvent.kind), col(DeliveryEvent.status)).order_by(
                col(DeliveryEvent.id)
            )
        ).all()
    assert gave_up == ["gave up after 3 attempts: 20429"]
    assert [k for k, _ in kinds].count("attempt") == 6
    assert [s for k, s in kinds if k == "status"].count("planned") == 2


@pytest.mark.parametrize("attempt", [1, 2, 5, 12])
def test_retry_delay_doubles_within_jitter_and_respects_cap_and_hint(attempt: int) -> None:
    rng = random.Random(7)
    ceiling = min(600.0, 10 * 2 ** (attempt - 1))
    delays = [retry_delay(attempt, base_seconds=10, max_seconds=600, rng=rng) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert max(delays) - min(delays) > ceiling / 4  # jitter really spreads them
    hinted = retry_delay(attempt, base_seconds=10, max_seconds=600, provider_hint=900, rng=rng)
    assert hinted == 900
