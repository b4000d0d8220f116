"""Several dispatch workers draining one outbox at once send every message exactly once, and only
one scheduler leads at a time. Real threads against the real databases."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlmodel import col

from channels.registry import channel_lookup
from loa.db import session_scope
from loa.models import DeliveryEvent, OutboxMessage
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from scheduler.leader import FileLeadership, leadership_for
from scheduler.tick import run_tick
from tests.builders import add_areas, add_recipient, launch
from tests.conftest import FakeClock

RECIPIENTS = 400
WORKERS = 4


def test_concurrent_workers_send_each_message_exactly_once(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(update={"worker_batch_size": 25})
    with session_scope(engine) as session:
        add_areas(session)
        for i in range(RECIPIENTS):
            add_recipient(session, f"+8491{i:07d}", now=clock())
    wave = {
        "name": "W",
        "channel": "sms",
        "at": "2026-05-08 07:30",
        "audience": {"areas": ["42"]},
        "template": "Chao {{ name }}",
    }
    launch(engine, {"name": "C", "waves": [wave]}, settings, clock())
    fire = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)
    run_tick(engine, now=fire, settings=settings)

    errors: list[BaseException] = []
    claimed_by: Counter[str] = Counter()

    def work(worker_id: str) -> None:
        lookup = channel_lookup(settings)
        try:
            while n := dispatch_once(
                engine,
                worker_id=worker_id,
                clock=lambda: fire,
                settings=settings,
                channel_for=lookup,
            ):
                claimed_by[worker_id] += n
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sum(claimed_by.values()) == RECIPIENTS

    assert settings.console_sink is not None
    lines = [json.loads(x) for x in Path(settings.console_sink).read_text("utf-8").splitlines()]
    assert len(lines) == RECIPIENTS
    assert len({x["message_id"] for x in lines}) == RECIPIENTS
    with session_scope(engine) as session:
        statuses = dict(
            session.execute(
                select(col(OutboxMessage.status), func.count()).group_by(col(OutboxMessage.status))
            ).all()
        )
        attempts = session.scalar(select(func.max(col(OutboxMessage.attempts))))
        events = session.scalar(select(func.count()).select_from(DeliveryEvent))
    assert statuses == {"sent": RECIPIENTS}
    assert attempts == 1
    assert events == 2 * RECIPIENTS  # one attempt and one status event per message


def test_only_one_scheduler_leads_and_a_standby_takes_over(engine: Engine, tmp_path: Path) -> None:
    first, second = leadership_for(engine), leadership_for(engine)
    if engine.dialect.name == "sqlite":
        assert isinstance(first, FileLeadership)
    assert first.try_acquire()
    assert first.try_acquire()  # a leader stays leader
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
    assert not first.try_acquire()
    second.release()
