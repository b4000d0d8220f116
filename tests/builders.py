"""Test data written straight through the models (the importers have their own tests)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import psycopg
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col

from loa.db import session_scope
from loa.models import Area, Consent, OutboxMessage, Recipient, RecipientDate
from loa.settings import Settings
from scheduler.lifecycle import approve_campaign, create_campaign, launch_campaign
from scheduler.spec import validate_spec
from scheduler.tick import run_tick

# Hà Tĩnh (42) > Đức Thọ (440) > two communes; Nghệ An (40) > one commune elsewhere.
AREAS = [
    ("42", "Tỉnh Hà Tĩnh", "province", None, "/42/"),
    ("440", "Huyện Đức Thọ", "district", "42", "/42/440/"),
    ("18301", "Xã Đức Đồng", "commune", "440", "/42/440/18301/"),
    ("18302", "Xã Đức Lạng", "commune", "440", "/42/440/18302/"),
    ("40", "Tỉnh Nghệ An", "province", None, "/40/"),
    ("16801", "Xã Nghi Lâm", "commune", "40", "/40/16801/"),
]


def add_areas(session: Session) -> None:
    for code, name, level, parent, path in AREAS:
        session.add(Area(code=code, name=name, level=level, parent_code=parent, path=path))
    session.flush()


def add_recipient(
    session: Session,
    phone: str,
    *,
    now: datetime,
    area: str | None = "18301",
    name: str | None = "Nguyễn Văn An",
    tags: tuple[str, ...] = (),
    attributes: dict[str, Any] | None = None,
) -> Recipient:
    recipient = Recipient(
        phone=phone,
        name=name,
        area_code=area,
        carrier="Viettel",
        attributes=attributes or {},
        tags=sorted(set(tags)),
        created_at=now,
        updated_at=now,
    )
    session.add(recipient)
    session.flush()
    assert recipient.id is not None
    # As the importer keeps them: every ISO date attribute is indexed in recipient_date.
    for key, value in (attributes or {}).items():
        try:
            day = date.fromisoformat(value)
        except (TypeError, ValueError):
            continue
        session.add(RecipientDate(recipient_id=recipient.id, attribute=key, value=day))
    session.flush()
    return recipient


def launch(engine: Engine, raw_spec: dict[str, Any], settings: Settings, now: datetime) -> int:
    """Create, approve and launch a campaign from a spec; return its id."""
    with session_scope(engine) as session:
        campaign = create_campaign(
            session,
            spec=validate_spec(raw_spec, source="test"),
            actor="planner",
            now=now,
            settings=settings,
        )
        assert campaign.id is not None
        approve_campaign(session, campaign.id, actor="approver", now=now, settings=settings)
        launch_campaign(session, campaign.id, actor="approver", now=now, settings=settings)
        return campaign.id


def launch_and_fire(
    engine: Engine,
    settings: Settings,
    *,
    at: str,
    fire_at: datetime,
    launched_at: datetime,
    template: str = "x",
) -> int:
    """A one-wave SMS campaign to area 42, launched at `launched_at` and fired by a scheduler tick
    at `fire_at` (the UTC instant of the local `at`); returns the campaign id."""
    wave = {
        "name": "W",
        "channel": "sms",
        "at": at,
        "audience": {"areas": ["42"]},
        "template": template,
    }
    campaign_id = launch(engine, {"name": "C", "waves": [wave]}, settings, launched_at)
    run_tick(engine, now=fire_at, settings=settings)
    return campaign_id


def outbox_counts(engine: Engine) -> dict[str, int]:
    """How many outbox messages are in each status."""
    with session_scope(engine) as session:
        return dict(
            session.execute(
                select(col(OutboxMessage.status), func.count()).group_by(col(OutboxMessage.status))
            ).all()
        )


def add_consent(session: Session, phone: str, *, now: datetime) -> None:
    """Recorded consent to advertising, which `qc` waves need (LOA_QC_REQUIRES_CONSENT)."""
    session.add(Consent(phone=phone, source="manual", given_at=now))
    session.flush()


def raise_conflict(session: Session) -> None:
    """Ends the session's transaction as PostgreSQL does when it cancels one side of a deadlock:
    on PostgreSQL the server itself raises SQLSTATE 40P01; SQLite has no such error (its writers
    queue for one lock), so there the driver-level error is made by hand."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text(
                "DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = 'deadlock_detected'; END $$"
            )
        )
    raise OperationalError("(test)", {}, psycopg.errors.DeadlockDetected("deadlock detected"))
