"""Two workers dispatch two waves at once while delivery reports come in, on PostgreSQL: the
rollup triggers of their transactions upsert the same rows in key order (stats_rollup_area's,
which both waves share, before the others), so no transaction deadlocks (PostgreSQL's own
deadlock counter stays put) and the rollups still match the outbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlmodel import col

from channels.base import Capabilities, Outcome, OutgoingMessage, SendResult
from loa.db import make_engine, session_scope
from loa.models import MessageStatus, OutboxMessage
from loa.settings import Settings
from scheduler.delivery import apply_delivery_report
from scheduler.dispatch import dispatch_once
from scheduler.tick import run_tick
from tests.builders import add_areas, add_recipient, launch
from tests.rollup_scenario import assert_exact

RECIPIENTS = 600
COMMUNES = ("18301", "18302", "16801")
CARRIERS = ("Viettel", "Mobifone", "Vinaphone", "Vietnamobile")
FIRE = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)


class MixedChannel:
    """Accepts most numbers; refuses those ending in 3 (two error codes), and asks to retry those
    ending in 7: a batch's messages then move to several keys at once."""

    name = "mixed"
    capabilities = Capabilities(
        max_batch=None, status_callbacks=True, lookup=False, max_body_chars=1600
    )

    def send_batch(self, messages: Sequence[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        results = []
        for m in messages:
            if m.to.endswith("3"):
                code = "21211" if m.to.endswith("13") else "21610"
                results.append(SendResult(m.message_id, Outcome.PERMANENT, error_code=code))
            elif m.to.endswith("7"):
                results.append(SendResult(m.message_id, Outcome.TRANSIENT, error_code="20429"))
            else:
                results.append(
                    SendResult(m.message_id, Outcome.ACCEPTED, provider_id=f"p{m.message_id}")
                )
        return results


@pytest.fixture
def engine(pg_url: str, tmp_path: Path) -> Iterator[Engine]:
    settings = Settings(database_url=pg_url, data_dir=tmp_path)
    engine = make_engine(settings)
    yield engine
    engine.dispose()


def _deadlocks(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            )
        )


def test_two_workers_and_reports_at_once_neither_deadlock_nor_miscount_postgresql(
    engine: Engine, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=str(engine.url.render_as_string(hide_password=False)),
        data_dir=tmp_path,
        worker_batch_size=20,
        window_info="always",
    )
    with session_scope(engine) as session:
        add_areas(session)
        for i in range(RECIPIENTS):
            person = add_recipient(session, f"+8491{i:07d}", now=FIRE, area=COMMUNES[i % 3])
            person.carrier = CARRIERS[(i // 3) % 4]
    wave = {
        "name": "W",
        "channel": "sms",
        "at": "2026-05-08 07:30",
        "audience": {"areas": ["42", "40"]},
        "template": "x",
    }
    # Two waves of one class: their messages share stats_rollup_area's rows (no wave in its key),
    # whichever worker sends them.
    waves = [wave, {**wave, "name": "W2"}]
    launch(engine, {"name": "C", "waves": waves}, settings, datetime(2026, 5, 8, tzinfo=UTC))
    run_tick(engine, now=FIRE, settings=settings)
    deadlocks_before = _deadlocks(engine)

    channel = MixedChannel()
    errors: list[BaseException] = []
    working = threading.Event()
    working.set()
    start = threading.Barrier(3)

    def work(worker_id: str) -> None:
        try:
            start.wait()
            while dispatch_once(
                engine,
                worker_id=worker_id,
                clock=lambda: FIRE,
                settings=settings,
                channel_for=lambda _: channel,
            ):
                pass
        except BaseException as exc:  # a thread's exception is otherwise lost
            errors.append(exc)

    def report() -> None:
        """Delivery reports for sent messages, one transaction each, while the workers run."""
        try:
            start.wait()
            while working.is_set():
                with session_scope(engine) as session:
                    sent = session.scalars(
                        select(col(OutboxMessage.id))
                        .where(col(OutboxMessage.status) == MessageStatus.SENT)
                        .order_by(col(OutboxMessage.id).desc())
                        .limit(10)
                    ).all()
                for message_id in sent:
                    with session_scope(engine) as session:
                        apply_delivery_report(
                            session,
                            channel="sms",
                            provider_id=None,
                            message_id=message_id,
                            status=MessageStatus.DELIVERED,
                            now=FIRE,
                        )
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(2)]
    reporter = threading.Thread(target=report)
    for thread in [*workers, reporter]:
        thread.start()
    for thread in workers:
        thread.join(timeout=300)
    working.clear()
    reporter.join(timeout=60)

    assert not errors, errors
    assert _deadlocks(engine) == deadlocks_before
    with session_scope(engine) as session:
        statuses = set(session.scalars(select(col(OutboxMessage.status)).distinct()).all())
    # Every kind of move happened: sent, delivered (reports), failed, planned again (retries).
    assert statuses == {"sent", "delivered", "failed", "planned"}
    assert_exact(engine)
