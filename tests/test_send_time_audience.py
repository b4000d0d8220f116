"""The audience is checked again when a message is claimed: whoever left it after the expansion
(another commune, a tag removed, a segment attribute changed) is cancelled with error code
left_audience and an event saying why, while the others are sent. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, update
from sqlmodel import col

from audience.segments import create_segment
from channels.registry import channel_lookup
from loa.db import session_scope
from loa.models import DeliveryEvent, OutboxMessage, Recipient, RecipientDate
from loa.settings import Settings
from scheduler.dispatch import LEFT_AUDIENCE, dispatch_once
from scheduler.tick import run_tick
from tests.builders import add_areas, add_recipient, launch
from tests.conftest import FakeClock

NINE = datetime(2026, 5, 8, 2, 0, tzinfo=UTC)  # 09:00 in Vietnam
STAYS, MOVES, UNTAGGED, RENEWED = (f"+8491200000{i}" for i in range(1, 5))


def _wave(audience: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "C",
        "waves": [
            {
                "name": "W",
                "channel": "sms",
                "class": "info",
                "at": "2026-05-08 09:00",
                "audience": audience,
                "template": "BHXH: {{ name }}",
            }
        ],
    }


def _statuses(engine: Engine) -> dict[str, tuple[str, str | None]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(
                col(Recipient.phone), col(OutboxMessage.status), col(OutboxMessage.error_code)
            ).join(Recipient, col(Recipient.id) == col(OutboxMessage.recipient_id))
        ).all()
    return {phone: (status, code) for phone, status, code in rows}


def test_who_left_the_areas_tags_or_segment_after_expansion_is_not_sent(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        for phone in (STAYS, MOVES, UNTAGGED, RENEWED):
            add_recipient(
                session,
                phone,
                now=clock(),
                tags=("nong-dan",),
                attributes={"card_expiry": "2026-05-20"},
            )
        create_segment(
            session,
            name="sap-het-han",
            raw_filter={"attributes": {"card_expiry": {"within_next_days": 30}}},
            description=None,
            actor="a",
            now=clock(),
            source="test",
        )
    launch(
        engine,
        _wave({"areas": ["440"], "tags": ["nong-dan"], "segment": "sap-het-han"}),
        settings,
        clock(),
    )
    clock.now = NINE
    run_tick(engine, now=clock(), settings=settings)
    assert {s for s, _ in _statuses(engine).values()} == {"planned"}

    # After the expansion, before the send: one moves to a commune of another province, one
    # loses the tag, one renews the card (no longer expiring within 30 days of the wave's day).
    with session_scope(engine) as session:
        ids = dict(session.execute(select(col(Recipient.phone), col(Recipient.id))).all())
        session.execute(
            update(Recipient).where(col(Recipient.phone) == MOVES).values(area_code="16801")
        )
        session.execute(update(Recipient).where(col(Recipient.id) == ids[UNTAGGED]).values(tags=[]))
        session.execute(
            update(Recipient)
            .where(col(Recipient.phone) == RENEWED)
            .values(attributes={"card_expiry": "2027-05-20"})
        )
        session.execute(
            update(RecipientDate)
            .where(col(RecipientDate.recipient_id) == ids[RENEWED])
            .values(value=datetime(2027, 5, 20).date())
        )

    lookup = channel_lookup(settings)
    assert dispatch_once(engine, worker_id="w", clock=clock, settings=settings, channel_for=lookup)
    assert _statuses(engine) == {
        STAYS: ("sent", None),
        MOVES: ("cancelled", LEFT_AUDIENCE),
        UNTAGGED: ("cancelled", LEFT_AUDIENCE),
        RENEWED: ("cancelled", LEFT_AUDIENCE),
    }
    with session_scope(engine) as session:
        events = session.execute(
            select(
                col(DeliveryEvent.status), col(DeliveryEvent.error_code), col(DeliveryEvent.detail)
            ).where(col(DeliveryEvent.status) == "cancelled")
        ).all()
    assert len(events) == 3
    assert all(code == LEFT_AUDIENCE and "audience" in (detail or "") for _, code, detail in events)


def test_a_move_inside_the_audience_areas_is_still_sent(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        add_recipient(session, STAYS, now=clock(), area="18301")
    launch(engine, _wave({"areas": ["42"]}), settings, clock())
    clock.now = NINE
    run_tick(engine, now=clock(), settings=settings)
    with session_scope(engine) as session:  # another commune of the same province
        session.execute(update(Recipient).values(area_code="18302"))
    lookup = channel_lookup(settings)
    assert dispatch_once(engine, worker_id="w", clock=clock, settings=settings, channel_for=lookup)
    assert _statuses(engine) == {STAYS: ("sent", None)}
