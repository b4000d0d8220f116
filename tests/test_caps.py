"""Frequency caps: at most N messages of a class per recipient per rolling period, counted across
workers, with the messages over the cap waiting (not dropped). On both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, select
from sqlmodel import col

from channels.registry import channel_lookup
from loa.db import session_scope
from loa.errors import InvalidInput
from loa.models import DeliveryEvent, OutboxMessage
from loa.settings import Settings
from scheduler.dispatch import claim_batch, dispatch_once
from scheduler.gate import sendable_wave_ids
from scheduler.policy import Cap, parse_cap
from scheduler.tick import run_tick
from tests.builders import add_areas, add_consent, add_recipient, launch, outbox_counts
from tests.conftest import FakeClock

NINE = datetime(2026, 5, 8, 2, 0, tzinfo=UTC)  # 09:00 in Vietnam


def test_cap_texts() -> None:
    assert parse_cap("3/24h") == Cap(3, timedelta(hours=24))
    assert parse_cap(" 1 / 7d ") == Cap(1, timedelta(days=7))
    assert parse_cap("") is None
    for bad in ("3", "3/24", "three/24h", "3/24w"):
        with pytest.raises(InvalidInput, match="is not like '3/24h'"):
            parse_cap(bad)
    with pytest.raises(InvalidInput, match="would never let a message through"):
        parse_cap("0/24h")
    with pytest.raises(ValidationError, match="cap_info"):
        Settings(cap_info="0/24h")


def _waves(engine: Engine, settings: Settings, clock: FakeClock, classes: list[str]) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        add_recipient(session, "+84912000001", now=clock())
        add_consent(session, "+84912000001", now=clock())  # the adverts are allowed to go
    waves: list[dict[str, Any]] = [
        {
            "name": f"W{i}",
            "channel": "sms",
            "class": cls,
            "at": "2026-05-08 09:00",
            "audience": {"areas": ["42"]},
            "template": "[QC] x. Tu choi: soan TU CHOI gui 789",
            "brandname": "BHXH",
        }
        for i, cls in enumerate(classes)
    ]
    launch(engine, {"name": "C", "waves": waves}, settings, clock())
    clock.now = NINE
    run_tick(engine, now=clock(), settings=settings)


def test_the_fourth_advert_in_a_day_waits_until_the_first_leaves_the_window(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    _waves(engine, settings, clock, ["qc", "qc", "qc", "qc", "info"])
    lookup = channel_lookup(settings)

    def dispatch() -> int:
        return dispatch_once(
            engine, worker_id="w", clock=clock, settings=settings, channel_for=lookup
        )

    dispatch()
    assert outbox_counts(engine) == {"sent": 4, "planned": 1}  # 3 qc + the info message
    with session_scope(engine) as session:
        waiting = session.execute(
            select(col(OutboxMessage.due_at), col(DeliveryEvent.detail))
            .join(DeliveryEvent, col(DeliveryEvent.message_id) == col(OutboxMessage.id))
            .where(
                col(OutboxMessage.status) == "planned", col(DeliveryEvent.error_code) == "capped"
            )
        ).one()
    assert waiting[0] == NINE + timedelta(hours=24)
    assert "cap of" in waiting[1] and "waits until 2026-05-09 02:00 UTC" in waiting[1]

    clock.now = NINE + timedelta(hours=23, minutes=59)
    run_tick(engine, now=clock(), settings=settings)
    assert dispatch() == 0
    clock.now = NINE + timedelta(hours=24)
    assert dispatch() == 1
    assert outbox_counts(engine) == {"sent": 5}


def test_claims_of_other_workers_count_against_the_cap(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    _waves(engine, settings, clock, ["qc", "qc", "qc", "qc"])
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
    with session_scope(engine) as session:
        second = claim_batch(
            session,
            worker_id="b",
            now=clock(),
            lease_seconds=60,
            limit=2,
            settings=settings,
            wave_ids=waves,
        )
    assert (len(first), len(second)) == (2, 1)  # a holds two unsent: b may take only one more
    assert outbox_counts(engine) == {"claimed": 3, "planned": 1}


def test_no_cap_for_a_class_whose_setting_is_empty(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(update={"cap_qc": ""})
    _waves(engine, settings, clock, ["qc", "qc", "qc", "qc"])
    assert (
        dispatch_once(
            engine,
            worker_id="w",
            clock=clock,
            settings=settings,
            channel_for=channel_lookup(settings),
        )
        == 4
    )
