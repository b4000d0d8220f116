"""The gateways' delivery-report webhook on both databases: a report with a good HMAC (or shared
secret) moves its message forward with one event; a bad or missing signature, a missing field or
an unknown status changes nothing; a replayed or late report is harmless; a report for a message
another adapter carried is ignored; an error code that says the number is invalid suppresses it."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update
from sqlmodel import col

from api.app import create_app
from channels.registry import channel_lookup
from loa.db import session_scope
from loa.models import DeliveryEvent, OutboxMessage, Recipient, Suppression
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from tests.builders import add_areas, add_recipient, launch_and_fire
from tests.conftest import FakeClock
from tests.gateway_stub import (
    GATEWAY_ENV,
    REPORT_SECRET,
    Stub,
    gateway_entry,
    running,
    write_gateways,
)

FIRE_AT = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)
PHONES = ("+84912000001", "+84912000002", "+84912000003")
PATH = "/webhooks/gateway/vn/status"


@pytest.fixture
def gw_settings(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    for key, value in GATEWAY_ENV.items():
        monkeypatch.setenv(key, value)
    with running(Stub()) as stub:
        plain = gateway_entry(stub.url)
        plain["report"] = {
            **plain["report"],
            "auth": {
                "type": "secret_header",
                "header": "X-Report-Token",
                "secret_env": "LOA_TEST_GW_REPORT_SECRET",
            },
            "format": "form",
            "items": None,
        }
        path = write_gateways(tmp_path / "gw.yaml", {"vn": gateway_entry(stub.url), "plain": plain})
        yield settings.model_copy(
            update={
                "sms_channel": "gateway:vn",
                "gateways_file": path,
                "public_url": "https://loa.example.vn",
            }
        )


@pytest.fixture
def sent(engine: Engine, gw_settings: Settings, clock: FakeClock) -> dict[str, int]:
    """A wave sent through gateway `vn`: each phone's outbox id."""
    with session_scope(engine) as session:
        add_areas(session)
        for phone in PHONES:
            add_recipient(session, phone, now=clock())
    launch_and_fire(
        engine, gw_settings, at="2026-05-08 07:30", fire_at=FIRE_AT, launched_at=clock()
    )
    clock.now = FIRE_AT
    lookup = channel_lookup(gw_settings)
    dispatch_once(engine, worker_id="w", clock=clock, settings=gw_settings, channel_for=lookup)
    with session_scope(engine) as session:
        rows = session.execute(
            select(col(Recipient.phone), col(OutboxMessage.id)).join(
                Recipient, col(Recipient.id) == col(OutboxMessage.recipient_id)
            )
        ).all()
    return {phone: int(message_id) for phone, message_id in rows}


@pytest.fixture
def client(engine: Engine, gw_settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(gw_settings, engine, clock=clock)) as c:
        yield c


def _signed(body: bytes, secret: str = REPORT_SECRET) -> dict[str, str]:
    return {
        "X-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        "Content-Type": "application/json",
    }


def _reports(*items: dict[str, Any]) -> bytes:
    return json.dumps({"reports": list(items)}).encode()


def _item(message_id: int, status: str, **extra: Any) -> dict[str, Any]:
    return {"requestId": f"loa-{message_id}", "status": status, **extra}


def _state(engine: Engine, message_id: int) -> tuple[str, int]:
    with session_scope(engine) as session:
        status = session.scalar(
            select(col(OutboxMessage.status)).where(col(OutboxMessage.id) == message_id)
        )
        events = len(
            session.scalars(
                select(col(DeliveryEvent.id)).where(
                    col(DeliveryEvent.message_id) == message_id, col(DeliveryEvent.kind) == "status"
                )
            ).all()
        )
    assert status is not None
    return status, events


def test_a_signed_report_moves_its_messages_forward_once(
    engine: Engine, client: TestClient, sent: dict[str, int]
) -> None:
    one, two = sent[PHONES[0]], sent[PHONES[1]]
    assert _state(engine, one) == ("sent", 1)
    # The id the stub gave message one (messages are sent side by side, in any order).
    with session_scope(engine) as session:
        sms_id = session.scalar(
            select(col(OutboxMessage.provider_id)).where(col(OutboxMessage.id) == one)
        )
    assert sms_id is not None and sms_id.startswith("sms-")
    body = _reports(_item(one, "DELIVRD", smsId=sms_id), _item(two, "UNDELIV", errorCode="2"))
    answer = client.post(PATH, content=body, headers=_signed(body))
    assert answer.status_code == 200, answer.text
    assert [r["effect"] for r in answer.json()["results"]] == ["moved", "moved"]
    assert _state(engine, one) == ("delivered", 2)
    assert _state(engine, two) == ("undelivered", 2)
    with session_scope(engine) as session:
        event = session.execute(
            select(col(DeliveryEvent.adapter), col(DeliveryEvent.provider_id))
            .where(col(DeliveryEvent.message_id) == one)
            .order_by(col(DeliveryEvent.id).desc())
        ).first()
    assert tuple(event or ()) == ("gateway:vn", sms_id)
    # A replay, and a late `sent` after `delivered`: nothing moves, no event is written.
    late = _reports(_item(one, "DELIVRD"), _item(one, "ENROUTE"))
    answer = client.post(PATH, content=late, headers=_signed(late))
    assert [r["effect"] for r in answer.json()["results"]] == ["unchanged", "unchanged"]
    assert _state(engine, one) == ("delivered", 2)


def test_a_bad_signature_or_a_bad_report_changes_nothing(
    engine: Engine, client: TestClient, sent: dict[str, int]
) -> None:
    one = sent[PHONES[0]]
    body = _reports(_item(one, "DELIVRD"))
    forged = _signed(body, secret="not-the-secret")
    assert client.post(PATH, content=body, headers=forged).status_code == 403
    tampered = _reports(_item(one, "REJECTD"))
    assert client.post(PATH, content=tampered, headers=_signed(body)).status_code == 403
    assert (
        client.post(PATH, content=body, headers={"Content-Type": "application/json"}).status_code
        == 403
    )
    # Signed, but wrong inside: a status not in the mapping (the whole request), a missing status.
    bad = _reports(_item(one, "DELIVRD"), _item(sent[PHONES[1]], "WHATEVER"))
    answer = client.post(PATH, content=bad, headers=_signed(bad))
    assert answer.status_code == 422 and "WHATEVER" in answer.json()["error"]["message"]
    missing = _reports({"requestId": f"loa-{one}"})
    assert client.post(PATH, content=missing, headers=_signed(missing)).status_code == 422
    assert (
        client.post(
            "/webhooks/gateway/nope/status", content=body, headers=_signed(body)
        ).status_code
        == 404
    )
    assert _state(engine, one) == ("sent", 1)
    assert _state(engine, sent[PHONES[1]]) == ("sent", 1)


def test_a_report_from_the_wrong_adapter_is_ignored_and_invalid_numbers_are_suppressed(
    engine: Engine, client: TestClient, sent: dict[str, int]
) -> None:
    one, three = sent[PHONES[0]], sent[PHONES[2]]
    # Gateway `plain` (a shared secret in a header, a form body) did not carry message one.
    form = {"requestId": f"loa-{one}", "status": "DELIVRD"}
    answer = client.post(
        "/webhooks/gateway/plain/status", data=form, headers={"X-Report-Token": REPORT_SECRET}
    )
    assert answer.status_code == 200 and answer.json()["results"][0]["effect"] == "mismatch"
    assert _state(engine, one) == ("sent", 1)
    wrong = client.post(
        "/webhooks/gateway/plain/status", data=form, headers={"X-Report-Token": "guess"}
    )
    assert wrong.status_code == 403
    # Once it is recorded as carried by `plain`, the same report moves it.
    with session_scope(engine) as session:
        session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.id) == one)
            .values(adapter="gateway:plain")
        )
    answer = client.post(
        "/webhooks/gateway/plain/status", data=form, headers={"X-Report-Token": REPORT_SECRET}
    )
    assert answer.json()["results"][0]["effect"] == "moved"
    body = _reports(_item(three, "UNDELIV", errorCode="1"))
    assert client.post(PATH, content=body, headers=_signed(body)).status_code == 200
    with session_scope(engine) as session:
        assert session.scalars(select(col(Suppression.phone))).all() == [PHONES[2]]
    assert _state(engine, three) == ("undelivered", 2)
