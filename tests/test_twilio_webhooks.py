"""Twilio's webhooks on both databases, signed by the SDK's own RequestValidator: a good report
moves its message forward with one event; a tampered parameter, a wrong URL or a missing field
changes nothing; a replayed or late report is harmless; inbound opt-out keywords suppress."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import Engine, select, update
from sqlmodel import Session, col
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator

from api.app import create_app
from channels.base import Channel, Outcome, SendResult
from channels.twilio import TwilioChannel, config_from_settings
from loa.db import session_scope
from loa.models import Consent, DeliveryEvent, OutboxMessage, Recipient, Suppression
from loa.settings import Settings
from scheduler.delivery import ReportResult, apply_delivery_report
from scheduler.dispatch import dispatch_once, record_results
from tests.builders import add_areas, add_recipient, launch_and_fire, raise_conflict
from tests.conftest import FakeClock

TOKEN = "twilio-auth-token-for-tests"
PUBLIC = "https://loa.example.vn"
STATUS_URL = f"{PUBLIC}/webhooks/twilio/status"
INBOUND_URL = f"{PUBLIC}/webhooks/twilio/inbound"
FIRE_AT = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)
PHONES = ("+84912000001", "+84912000002", "+84912000003")


class Accepting(AsyncHttpClient):  # type: ignore[misc]
    """Twilio accepting every message, with a sid made from the number; keeps the forms."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("accepting"), True, 5)
        self.forms: dict[str, dict[str, Any]] = {}

    async def request(self, method: str, uri: str, **kwargs: Any) -> Response:
        form = dict(kwargs.get("data") or {})
        self.forms[form["To"]] = form
        return Response(201, json.dumps({"sid": _sid(form["To"]), "status": "queued"}))


def _sid(phone: str) -> str:
    return "SM" + phone[-10:].rjust(32, "0")


@pytest.fixture
def twilio_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "sms_channel": "twilio",
            "twilio_account_sid": "AC" + "ab" * 16,
            "twilio_auth_token": SecretStr(TOKEN),
            "twilio_from": "+15005550006",
            "public_url": PUBLIC,
        }
    )


@pytest.fixture
def sent(engine: Engine, twilio_settings: Settings, clock: FakeClock) -> dict[str, str]:
    """A wave sent through the Twilio adapter: each phone's StatusCallback URL."""
    with session_scope(engine) as session:
        add_areas(session)
        for phone in PHONES:
            add_recipient(session, phone, now=clock())
    launch_and_fire(
        engine, twilio_settings, at="2026-05-08 07:30", fire_at=FIRE_AT, launched_at=clock()
    )
    clock.now = FIRE_AT
    http = Accepting()
    adapter = TwilioChannel(config_from_settings(twilio_settings), http_client=http)

    def lookup(_: str) -> Channel:
        return adapter

    dispatch_once(engine, worker_id="w", clock=clock, settings=twilio_settings, channel_for=lookup)
    return {phone: str(form["StatusCallback"]) for phone, form in http.forms.items()}


@pytest.fixture
def client(engine: Engine, twilio_settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(twilio_settings, engine, clock=clock)) as c:
        yield c


def _post(
    client: TestClient,
    url: str,
    params: dict[str, str],
    *,
    signed_as: str | None = None,
    signed_params: dict[str, str] | None = None,
) -> Any:
    """POST `params` to `url` as Twilio would, signed for `signed_as` (default: the URL itself)
    and `signed_params` (default: the same parameters)."""
    signature = RequestValidator(TOKEN).compute_signature(
        signed_as or url, signed_params if signed_params is not None else params
    )
    path = url.removeprefix(PUBLIC)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})


def _report(phone: str, status: str, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": _sid(phone),
        "SmsSid": _sid(phone),
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": "AC" + "ab" * 16,
        "To": phone,
        "From": "+15005550006",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def _state(engine: Engine, phone: str) -> tuple[str, str | None, str | None, list[str]]:
    """The message's status, provider id, error code, and its status events after `sent`."""
    with session_scope(engine) as session:
        message_id, status, provider_id, code = session.execute(
            select(
                col(OutboxMessage.id),
                col(OutboxMessage.status),
                col(OutboxMessage.provider_id),
                col(OutboxMessage.error_code),
            )
            .join(Recipient, col(Recipient.id) == col(OutboxMessage.recipient_id))
            .where(col(Recipient.phone) == phone)
        ).one()
        events = session.scalars(
            select(col(DeliveryEvent.status))
            .where(col(DeliveryEvent.message_id) == message_id, col(DeliveryEvent.kind) == "status")
            .order_by(col(DeliveryEvent.id))
        ).all()
    return status, provider_id, code, list(events)


def test_the_adapter_asks_for_reports_at_the_public_url(sent: dict[str, str]) -> None:
    assert all(url.startswith(STATUS_URL + "?m=") for url in sent.values())
    assert len(set(sent.values())) == len(PHONES)


def test_a_signed_report_moves_the_message_forward_once(
    client: TestClient, engine: Engine, sent: dict[str, str]
) -> None:
    phone = PHONES[0]
    assert _state(engine, phone) == ("sent", _sid(phone), None, ["sent"])
    answer = _post(client, sent[phone], _report(phone, "delivered"))
    assert answer.status_code == 200
    assert answer.json()["effect"] == "moved"
    assert _state(engine, phone) == ("delivered", _sid(phone), None, ["sent", "delivered"])
    # Replay: the same report again is answered 200 and writes nothing.
    again = _post(client, sent[phone], _report(phone, "delivered"))
    assert again.status_code == 200 and again.json()["effect"] == "unchanged"
    # Out of order: `sent` after `delivered` leaves it delivered.
    late = _post(client, sent[phone], _report(phone, "sent"))
    assert late.status_code == 200 and late.json()["effect"] == "unchanged"
    # A final status is never overwritten, not even by another final one.
    _post(client, sent[phone], _report(phone, "undelivered", ErrorCode="30003"))
    assert _state(engine, phone) == ("delivered", _sid(phone), None, ["sent", "delivered"])


def _metrics(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
    }


def test_reports_are_counted_by_effect_and_their_lag_measured_from_the_send(
    client: TestClient,
    engine: Engine,
    sent: dict[str, str],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    phone = PHONES[0]
    lag = ("loa_webhook_lag_seconds_count", (("adapter", "twilio"),))
    lag_sum = ("loa_webhook_lag_seconds_sum", (("adapter", "twilio"),))
    bucket = ("loa_webhook_lag_seconds_bucket", (("adapter", "twilio"), ("le", "60.0")))
    moved = (
        "loa_delivery_reports_total",
        (("adapter", "twilio"), ("effect", "moved"), ("status", "delivered")),
    )
    unchanged = (
        "loa_delivery_reports_total",
        (("adapter", "twilio"), ("effect", "unchanged"), ("status", "delivered")),
    )
    before = _metrics(client)
    clock.now = FIRE_AT + timedelta(seconds=42)  # the message was sent at FIRE_AT
    with caplog.at_level(logging.DEBUG, logger="scheduler.delivery"):
        answer = _post(client, sent[phone], _report(phone, "delivered")).json()
    assert answer["effect"] == "moved"
    # The log record carries the ids a JSON log line shows (tests/test_ops.py: the format).
    with session_scope(engine) as session:
        wave_id = session.get(OutboxMessage, answer["message_id"]).wave_id  # type: ignore[union-attr]
    [record] = [r for r in caplog.records if r.name == "scheduler.delivery"]
    assert (record.message_id, record.wave_id, record.adapter, record.lag_seconds) == (  # type: ignore[attr-defined]
        answer["message_id"],
        wave_id,
        "twilio",
        42.0,
    )
    clock.now += timedelta(seconds=100)
    assert _post(client, sent[phone], _report(phone, "delivered")).json()["effect"] == "unchanged"
    after = _metrics(client)

    def delta(key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
        return after.get(key, 0) - before.get(key, 0)

    # One lag observed, of 42 s (under the 60 s bucket): the replay moved nothing, so its
    # 142 s is no report's lag.
    assert (delta(lag), delta(lag_sum), delta(bucket)) == (1, 42, 1)
    assert (delta(moved), delta(unchanged)) == (1, 1)


def test_a_tampered_parameter_is_refused_and_changes_nothing(
    client: TestClient, engine: Engine, sent: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    phone = PHONES[0]
    genuine = _report(phone, "delivered")
    forged = {**genuine, "MessageStatus": "failed", "ErrorCode": "30005"}
    with caplog.at_level(logging.WARNING, logger="api.routes.webhooks"):
        answer = _post(client, sent[phone], forged, signed_params=genuine)
    assert answer.status_code == 403
    assert _state(engine, phone) == ("sent", _sid(phone), None, ["sent"])
    assert any("X-Twilio-Signature" in r.getMessage() for r in caplog.records)
    with session_scope(engine) as session:
        assert session.get(Suppression, phone) is None
    # A parameter added to a signed report (here: Loa's id of another message) is refused too.
    other = sent[PHONES[1]]
    assert _post(client, other, genuine, signed_as=sent[phone]).status_code == 403
    assert _state(engine, PHONES[1]) == ("sent", _sid(PHONES[1]), None, ["sent"])


def test_a_signature_for_another_url_or_none_is_refused(
    client: TestClient, engine: Engine, sent: dict[str, str]
) -> None:
    phone = PHONES[0]
    wrong = sent[phone].replace(PUBLIC, "https://attacker.example")
    assert (
        _post(client, sent[phone], _report(phone, "delivered"), signed_as=wrong).status_code == 403
    )
    path = sent[phone].removeprefix(PUBLIC)
    assert client.post(path, data=_report(phone, "delivered")).status_code == 403
    assert _state(engine, phone) == ("sent", _sid(phone), None, ["sent"])


def test_an_undeliverable_number_is_marked_and_a_filtered_message_alerts(
    client: TestClient, engine: Engine, sent: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    invalid, filtered = PHONES[1], PHONES[2]
    assert (
        _post(client, sent[invalid], _report(invalid, "undelivered", ErrorCode="30005")).status_code
        == 200
    )
    assert _state(engine, invalid) == (
        "undelivered",
        _sid(invalid),
        "30005",
        ["sent", "undelivered"],
    )
    with caplog.at_level(logging.ERROR, logger="api.routes.webhooks"):
        _post(client, sent[filtered], _report(filtered, "failed", ErrorCode="30007"))
    assert _state(engine, filtered)[0::2] == ("failed", "30007")
    assert any("30007" in r.getMessage() for r in caplog.records)
    with session_scope(engine) as session:
        listed = dict(
            session.execute(select(col(Suppression.phone), col(Suppression.reason))).all()
        )
    assert listed == {invalid: "invalid"}


def test_missing_fields_and_unknown_statuses_are_refused_without_change(
    client: TestClient, engine: Engine, sent: dict[str, str]
) -> None:
    phone = PHONES[0]
    no_status = {k: v for k, v in _report(phone, "delivered").items() if "Status" not in k}
    assert _post(client, sent[phone], no_status).status_code == 422
    no_sid = {k: v for k, v in _report(phone, "delivered").items() if "Sid" not in k[-3:]}
    assert _post(client, sent[phone], no_sid).status_code == 422
    assert _post(client, sent[phone], _report(phone, "exploded")).status_code == 422
    assert _state(engine, phone) == ("sent", _sid(phone), None, ["sent"])


def test_a_report_for_an_unknown_message_is_acknowledged_and_ignored(
    client: TestClient, engine: Engine, sent: dict[str, str]
) -> None:
    answer = _post(client, f"{STATUS_URL}?m=999999", _report("+84912999999", "delivered"))
    assert answer.status_code == 200 and answer.json()["effect"] == "unknown_message"
    # Without Loa's id, by Twilio's id alone (a report configured on a Messaging Service).
    by_sid = _post(client, STATUS_URL, _report(PHONES[0], "delivered"))
    assert by_sid.json()["effect"] == "moved"
    assert _state(engine, PHONES[0])[0] == "delivered"
    # Another message's Twilio id under this message's Loa id: not applied.
    mismatch = _post(client, sent[PHONES[1]], _report(PHONES[2], "delivered"))
    assert mismatch.status_code == 200 and mismatch.json()["effect"] == "mismatch"
    assert _state(engine, PHONES[1])[0] == "sent"


def test_a_report_before_the_worker_recorded_the_send_settles_it(
    client: TestClient,
    engine: Engine,
    sent: dict[str, str],
    twilio_settings: Settings,
    clock: FakeClock,
) -> None:
    """Twilio can report delivery before the batch's answers are recorded; the report wins and
    the worker's late answer changes nothing."""
    phone = PHONES[0]
    with session_scope(engine) as session:
        message_id = session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.provider_id) == _sid(phone))
            .values(status="sending", provider_id=None, lease_owner="w2")
            .returning(col(OutboxMessage.id))
        ).scalar_one()
    assert _post(client, sent[phone], _report(phone, "delivered")).json()["effect"] == "moved"
    with session_scope(engine) as session:
        record_results(
            session,
            [SendResult(message_id, Outcome.ACCEPTED, provider_id=_sid(phone))],
            {message_id: 1},
            worker_id="w2",
            now=clock(),
            settings=twilio_settings,
        )
    assert _state(engine, phone)[:2] == ("delivered", _sid(phone))


def test_an_inbound_opt_out_suppresses_and_answers_empty_twiml(
    client: TestClient, engine: Engine
) -> None:
    form = {
        "MessageSid": "SM" + "1" * 32,
        "From": "+84912000001",
        "To": "+15005550006",
        "Body": "Từ chối",
    }
    forged = {**form, "From": "+84912000002"}
    assert _post(client, INBOUND_URL, forged, signed_params=form).status_code == 403
    answer = _post(client, INBOUND_URL, form)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/xml")
    assert answer.text.endswith("<Response />")
    chat = {**form, "From": "+84912000003", "Body": "Anh Huy đây"}
    assert _post(client, INBOUND_URL, chat).status_code == 200
    no_from = {k: v for k, v in form.items() if k != "From"}
    assert _post(client, INBOUND_URL, no_from).status_code == 422
    with session_scope(engine) as session:
        listed = dict(
            session.execute(select(col(Suppression.phone), col(Suppression.reason))).all()
        )
    assert listed == {"+84912000001": "opt_out"}


def test_an_inbound_consent_keyword_records_consent(client: TestClient, engine: Engine) -> None:
    form = {
        "MessageSid": "SM" + "2" * 32,
        "From": "+84912000004",
        "To": "+15005550006",
        "Body": "DKQC",
    }
    assert _post(client, INBOUND_URL, form).status_code == 200
    with session_scope(engine) as session:
        consent = session.get(Consent, "+84912000004")
    assert consent is not None and consent.source == "keyword"


def test_without_an_auth_token_every_webhook_is_refused(
    engine: Engine, twilio_settings: Settings, clock: FakeClock
) -> None:
    unset = twilio_settings.model_copy(update={"twilio_auth_token": SecretStr("")})
    with TestClient(create_app(unset, engine, clock=clock)) as c:
        answer = _post(c, INBOUND_URL, {"From": "+84912000001", "Body": "STOP"})
    assert answer.status_code == 403
    assert "LOA_TWILIO_AUTH_TOKEN" in answer.json()["error"]["message"]


def test_a_report_whose_transaction_the_database_cancels_is_applied_on_the_next_attempt(
    client: TestClient, engine: Engine, sent: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deadlock between a report and a worker cancels one transaction whole; the report is
    applied again at once rather than answered 500 and left to Twilio's retry."""
    calls: list[int] = []

    def deadlocked_once(session: Session, **kwargs: Any) -> ReportResult:
        calls.append(1)
        result = apply_delivery_report(session, **kwargs)
        if len(calls) == 1:
            raise_conflict(session)
        return result

    monkeypatch.setattr("api.routes.webhooks.apply_delivery_report", deadlocked_once)
    phone = PHONES[1]
    answer = _post(client, sent[phone], _report(phone, "delivered"))
    assert answer.status_code == 200 and answer.json()["effect"] == "moved"
    assert len(calls) == 2
    # One delivered event: the cancelled attempt's event went with its transaction.
    assert _state(engine, phone) == ("delivered", _sid(phone), None, ["sent", "delivered"])
