"""Consent to advertising: a `qc` wave reaches only numbers with recorded consent (suppressed with
error code no_consent otherwise, at expansion and again at claim), the plan counts them, other
classes are not affected, and the setting can turn it off. Consent imports report bad rows.
On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select
from sqlmodel import col

from audience.consent import add_consent, import_consents, list_consents, remove_consent
from channels.registry import channel_lookup
from loa.db import session_scope
from loa.errors import InvalidInput
from loa.models import Consent, DeliveryEvent, OutboxMessage, Recipient, Suppression
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from scheduler.plan import plan_campaign
from scheduler.tick import run_tick
from tests.builders import add_areas, add_recipient, launch
from tests.conftest import FakeClock

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
NINE = datetime(2026, 5, 8, 2, 0, tzinfo=UTC)  # 09:00 in Vietnam
CONSENTED, UNCONSENTED, OPTED_OUT, LATE = (f"+8491200000{i}" for i in range(1, 5))


@pytest.fixture
def people(engine: Engine, clock: FakeClock) -> None:
    """Four people: with consent; without; opted out (and no consent); with consent that will be
    withdrawn after the expansion."""
    with session_scope(engine) as session:
        add_areas(session)
        for phone in (CONSENTED, UNCONSENTED, OPTED_OUT, LATE):
            add_recipient(session, phone, now=clock())
        for phone in (CONSENTED, LATE):
            add_consent(session, phone, actor="a", now=clock())
        session.add(Suppression(phone=OPTED_OUT, reason="opt_out", created_at=clock()))


def _campaign(engine: Engine, settings: Settings, clock: FakeClock, message_class: str) -> int:
    wave: dict[str, Any] = {
        "name": "W",
        "channel": "sms",
        "class": message_class,
        "at": "2026-05-08 09:00",
        "audience": {"areas": ["42"]},
        "template": "[QC] BHXH tu nguyen. Tu choi: TU CHOI",
        "brandname": "BHXH",
    }
    return launch(engine, {"name": "C", "waves": [wave]}, settings, clock())


def _outbox(engine: Engine) -> dict[str, tuple[str, str | None]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(
                col(Recipient.phone), col(OutboxMessage.status), col(OutboxMessage.error_code)
            ).join(Recipient, col(Recipient.id) == col(OutboxMessage.recipient_id))
        ).all()
    return {phone: (status, code) for phone, status, code in rows}


def _excluded(
    engine: Engine, settings: Settings, campaign_id: int, now: datetime
) -> dict[str, int]:
    with session_scope(engine) as session:
        [wave] = plan_campaign(session, campaign_id, now=now, settings=settings).waves
    return {k: v for k, v in wave.excluded.model_dump().items() if v} | {"to_send": wave.to_send}


def _fire_and_send(engine: Engine, settings: Settings, clock: FakeClock) -> None:
    clock.now = NINE
    run_tick(engine, now=clock(), settings=settings)


@pytest.mark.usefixtures("people")
def test_advertising_goes_only_to_numbers_with_consent(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    campaign_id = _campaign(engine, settings, clock, "qc")
    assert _excluded(engine, settings, campaign_id, clock()) == {
        "opted_out": 1,
        "no_consent": 1,  # the opted-out person is counted once, as opted out
        "to_send": 2,
    }
    _fire_and_send(engine, settings, clock)
    # Nobody silently skipped: every member of the audience has a row, with the reason.
    assert _outbox(engine) == {
        CONSENTED: ("planned", None),
        UNCONSENTED: ("suppressed", "no_consent"),
        OPTED_OUT: ("suppressed", None),
        LATE: ("planned", None),
    }

    # Consent withdrawn after the expansion: the claim sets the message aside.
    with session_scope(engine) as session:
        remove_consent(session, LATE, actor="a", now=clock())
    lookup = channel_lookup(settings)
    assert dispatch_once(engine, worker_id="w", clock=clock, settings=settings, channel_for=lookup)
    assert _outbox(engine)[LATE] == ("suppressed", "no_consent")
    assert _outbox(engine)[CONSENTED][0] == "sent"
    with session_scope(engine) as session:
        events = session.execute(
            select(col(DeliveryEvent.status), col(DeliveryEvent.error_code)).where(
                col(DeliveryEvent.kind) == "status"
            )
        ).all()
    assert sorted(events, key=str) == [("sent", None), ("suppressed", "no_consent")]
    # The plan of the fired wave: everyone is accounted for once.
    assert _excluded(engine, settings, campaign_id, clock()) == {
        "opted_out": 1,
        "no_consent": 2,
        "duplicate": 1,
        "to_send": 0,
    }


@pytest.mark.usefixtures("people")
@pytest.mark.parametrize("message_class", ["info", "care"])
def test_public_information_and_service_notices_need_no_consent(
    engine: Engine, settings: Settings, clock: FakeClock, message_class: str
) -> None:
    campaign_id = _campaign(engine, settings, clock, message_class)
    assert _excluded(engine, settings, campaign_id, clock()) == {"opted_out": 1, "to_send": 3}
    _fire_and_send(engine, settings, clock)
    with session_scope(engine) as session:
        session.delete(session.get(Consent, LATE))
    dispatch_once(
        engine, worker_id="w", clock=clock, settings=settings, channel_for=channel_lookup(settings)
    )
    assert _outbox(engine) == {
        CONSENTED: ("sent", None),
        UNCONSENTED: ("sent", None),
        OPTED_OUT: ("suppressed", None),
        LATE: ("sent", None),
    }


@pytest.mark.usefixtures("people")
def test_with_the_setting_off_advertising_needs_no_consent(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(update={"qc_requires_consent": False})
    campaign_id = _campaign(engine, settings, clock, "qc")
    assert _excluded(engine, settings, campaign_id, clock()) == {"opted_out": 1, "to_send": 3}
    _fire_and_send(engine, settings, clock)
    with session_scope(engine) as session:
        remove_consent(session, LATE, actor="a", now=clock())
    dispatch_once(
        engine, worker_id="w", clock=clock, settings=settings, channel_for=channel_lookup(settings)
    )
    assert {p: s for p, (s, _) in _outbox(engine).items()} == {
        CONSENTED: "sent",
        UNCONSENTED: "sent",
        OPTED_OUT: "suppressed",
        LATE: "sent",
    }
    assert Settings().qc_requires_consent  # on unless said otherwise


def test_consent_by_hand_and_import_with_bad_rows_reported(
    engine: Engine, clock: FakeClock, tmp_path: Path
) -> None:
    with session_scope(engine) as session:
        add_consent(session, "0912 000 001", note="form 12", actor="a", now=clock())
        session.add(Suppression(phone="+84912000003", reason="opt_out", created_at=clock()))
        with pytest.raises(InvalidInput, match="in the future"):
            add_consent(
                session,
                "0912000002",
                actor="a",
                now=clock(),
                given_at=datetime(2027, 1, 1, tzinfo=UTC),
            )
    source = tmp_path / "dong_y.csv"
    source.write_text(
        "SĐT,Ngày đồng ý,Ghi chú\n"
        "0912000001,01/05/2026,renewed\n"
        "0912000002,2026-04-30,\n"
        "0912000003,,\n"  # opted out: consent recorded, still suppressed
        "0912000004,31/02/2026,\n"
        "0912000005,01/06/2026,\n"
        "024 3825 1234,01/05/2026,\n",
        encoding="utf-8",
    )
    with session_scope(engine) as session:
        report = import_consents(session, source, now=clock(), actor="a", zone=HCM)
    assert (report.rows_read, report.added, report.updated, report.suppressed) == (6, 2, 1, 1)
    assert [(e.line, e.column, e.value, e.reason) for e in report.rejected] == [
        (
            5,
            "Ngày đồng ý",
            "31/02/2026",
            "not a date (expected dd/mm/yyyy, yyyy-mm-dd or an ISO date-time)",
        ),
        (6, "Ngày đồng ý", "01/06/2026", "in the future"),
        (7, "SĐT", "024 3825 1234", "not a mobile number (landline)"),
    ]
    with session_scope(engine) as session:
        rows, next_after = list_consents(session)
        given = {c.phone: (c.source, c.given_at, c.note) for c in rows}
    assert next_after is None
    assert given == {
        "+84912000001": ("import", datetime(2026, 4, 30, 17, 0, tzinfo=UTC), "renewed"),
        "+84912000002": ("import", datetime(2026, 4, 29, 17, 0, tzinfo=UTC), None),
        "+84912000003": ("import", clock(), None),
    }
