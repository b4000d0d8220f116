"""The Twilio adapter's error paths, through the real SDK with a `twilio.http.AsyncHttpClient` that
answers each recipient with a canned response (or fails the way a network does): every answer
lands in the right outcome, and through the dispatcher in the right status, with the numbers
Twilio calls invalid or unsubscribed put on the suppression list (both databases)."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import Engine, select
from sqlmodel import col
from twilio.http import AsyncHttpClient
from twilio.http.response import Response

from channels.base import Channel, Outcome, OutgoingMessage, RecipientProblem
from channels.registry import channel_for, check_channel
from channels.twilio import TwilioChannel, classify_error, config_from_settings
from loa.db import session_scope
from loa.errors import InvalidInput
from loa.models import AuditEntry, OutboxMessage, Recipient, Suppression
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from tests.builders import add_areas, add_recipient, launch_and_fire
from tests.clirun import loa_env, run_loa
from tests.conftest import FakeClock

ACCOUNT = "AC" + "0123456789abcdef" * 2
NOW = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)


def _error(status: int, code: int, message: str, **headers: str) -> Response:
    body = {"code": code, "message": message, "more_info": "", "status": status}
    return Response(status, json.dumps(body), headers)


def _created(to: str) -> Response:
    return Response(201, json.dumps({"sid": "SM" + to[-10:].rjust(32, "0"), "status": "queued"}))


def _refused() -> Exception:
    key = aiohttp.client_reqrep.ConnectionKey("api.twilio.com", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


# By the recipient's number: what "Twilio" answers (a response, or an exception raised).
CANNED: dict[str, Any] = {
    "+84912000001": "created",
    "+84912000002": _error(400, 21211, "The 'To' number is not a valid phone number."),
    "+84912000003": _error(400, 21614, "'To' number is not a valid mobile number"),
    "+84912000004": _error(400, 30005, "Unknown destination handset"),
    "+84912000005": _error(400, 30006, "Landline or unreachable carrier"),
    "+84912000006": _error(400, 21610, "Attempt to send to unsubscribed recipient"),
    "+84912000007": _error(400, 30007, "Message filtered"),
    "+84912000008": _error(429, 20429, "Too Many Requests", **{"Retry-After": "7"}),
    "+84912000009": Response(429, "", {"retry-after": "3"}),
    "+84912000010": _error(500, 20500, "Internal Server Error"),
    "+84912000011": Response(503, "<html>Service Unavailable</html>"),
    "+84912000012": TimeoutError(),  # aiohttp's total timeout, after the request was written
    "+84912000013": aiohttp.ServerDisconnectedError(),  # the connection closed before an answer
    "+84912000014": _refused(),
    "+84912000015": aiohttp.ConnectionTimeoutError("connect timed out"),
    "+84912000016": _error(401, 20003, "Authenticate"),
    "+84912000017": _error(400, 21617, "The concatenated message body exceeds the 1600 limit"),
}


class Canned(AsyncHttpClient):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(logging.getLogger("canned"), True, 5)
        self.forms: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    async def request(self, method: str, uri: str, **kwargs: Any) -> Response:
        form = dict(kwargs.get("data") or {})
        with self.lock:
            self.forms.append(form)
        answer = CANNED[form["To"]]
        if isinstance(answer, Exception):
            raise answer
        return _created(form["To"]) if answer == "created" else answer


def _settings(**extra: Any) -> Settings:
    values: dict[str, Any] = {
        "sms_channel": "twilio",
        "twilio_account_sid": ACCOUNT,
        "twilio_auth_token": "secret-token",
        "twilio_from": "BHXH",
        "public_url": "https://loa.example.vn",
        "twilio_concurrency": 4,
    }
    values.update(extra)
    return Settings(**values)


EXPECTED = {
    "+84912000001": (Outcome.ACCEPTED, None, None),
    "+84912000002": (Outcome.PERMANENT, "21211", RecipientProblem.INVALID),
    "+84912000003": (Outcome.PERMANENT, "21614", RecipientProblem.INVALID),
    "+84912000004": (Outcome.PERMANENT, "30005", RecipientProblem.INVALID),
    "+84912000005": (Outcome.PERMANENT, "30006", RecipientProblem.INVALID),
    "+84912000006": (Outcome.PERMANENT, "21610", RecipientProblem.OPTED_OUT),
    "+84912000007": (Outcome.PERMANENT, "30007", None),
    "+84912000008": (Outcome.TRANSIENT, "20429", None),
    "+84912000009": (Outcome.TRANSIENT, "429", None),
    "+84912000010": (Outcome.AMBIGUOUS, "20500", None),
    "+84912000011": (Outcome.AMBIGUOUS, "503", None),
    "+84912000012": (Outcome.AMBIGUOUS, "timeout", None),
    "+84912000013": (Outcome.AMBIGUOUS, "connection", None),
    "+84912000014": (Outcome.TRANSIENT, "connect", None),
    "+84912000015": (Outcome.TRANSIENT, "connect", None),
    "+84912000016": (Outcome.TRANSIENT, "20003", None),
    "+84912000017": (Outcome.PERMANENT, "21617", None),
}


def test_each_canned_answer_has_its_outcome(caplog: pytest.LogCaptureFixture) -> None:
    http = Canned()
    channel = TwilioChannel(config_from_settings(_settings()), http_client=http)
    messages = [OutgoingMessage(i, 1, to, "x") for i, to in enumerate(CANNED)]
    with caplog.at_level(logging.ERROR, logger="channels.twilio"):
        results = {r.message_id: r for r in channel.send_batch(messages, now=NOW)}
    assert len(results) == len(messages)
    for message in messages:
        result = results[message.message_id]
        got = (result.outcome, result.error_code, result.recipient_problem)
        assert got == EXPECTED[message.to], message.to
    by_to = {m.to: results[m.message_id] for m in messages}
    assert by_to["+84912000001"].provider_id == "SM" + "4912000001".rjust(32, "0")
    assert by_to["+84912000008"].retry_after == 7  # Retry-After kept though the SDK drops it
    assert by_to["+84912000009"].retry_after == 3
    assert (
        by_to["+84912000002"].detail and "not a valid phone number" in by_to["+84912000002"].detail
    )
    alerts = [r.getMessage() for r in caplog.records]
    assert any("30007" in a and "message 6" in a for a in alerts)  # filtered: someone must look
    assert any("20003" in a and "LOA_TWILIO_AUTH_TOKEN" in a for a in alerts)
    assert len(http.forms) == len(messages)  # one request per message, none retried by the SDK


def test_a_deadline_already_passed_is_not_sent() -> None:
    http = Canned()
    channel = TwilioChannel(config_from_settings(_settings()), http_client=http)
    [result] = channel.send_batch(
        [OutgoingMessage(1, 1, "+84912000001", "x", expires_at=NOW - timedelta(seconds=1))],
        now=NOW,
    )
    assert (result.outcome, result.error_code) == (Outcome.PERMANENT, "expired")
    assert http.forms == []


def test_the_classification_of_delivery_report_codes() -> None:
    assert classify_error(30007, None).alert
    assert classify_error(30005, None).problem == RecipientProblem.INVALID
    assert classify_error(30003, None).outcome == Outcome.PERMANENT  # unreachable handset
    assert classify_error(None, 502).outcome == Outcome.AMBIGUOUS


@pytest.mark.parametrize(
    ("override", "variable"),
    [
        ({"twilio_account_sid": ""}, "LOA_TWILIO_ACCOUNT_SID"),
        ({"twilio_account_sid": "AC123"}, "LOA_TWILIO_ACCOUNT_SID"),
        ({"twilio_auth_token": ""}, "LOA_TWILIO_AUTH_TOKEN"),
        ({"twilio_from": ""}, "LOA_TWILIO_FROM"),
        ({"twilio_messaging_service_sid": "MG1"}, "LOA_TWILIO_MESSAGING_SERVICE_SID"),
        ({"public_url": ""}, "LOA_PUBLIC_URL"),
        ({"public_url": "loa.example.vn"}, "LOA_PUBLIC_URL"),
    ],
)
def test_missing_or_malformed_settings_are_refused_when_the_adapter_is_built(
    override: dict[str, str], variable: str
) -> None:
    settings = _settings(**override)
    with pytest.raises(InvalidInput) as refused:
        check_channel("sms", settings)
    assert variable in refused.value.message
    with pytest.raises(InvalidInput):
        channel_for("sms", settings)


def test_an_unknown_adapter_name_is_refused_with_the_known_ones() -> None:
    with pytest.raises(InvalidInput) as refused:
        check_channel("sms", _settings(sms_channel="twillio"))
    assert "twillio" in refused.value.message and "twilio" in refused.value.message


def test_a_loudspeaker_wave_has_no_message_adapter() -> None:
    with pytest.raises(InvalidInput) as refused:
        check_channel("loudspeaker", _settings())
    assert "not sent through a message adapter" in refused.value.message
    assert refused.value.field == "channel"


def test_the_cli_worker_refuses_to_start_without_credentials(tmp_path: Path) -> None:
    env = loa_env(
        f"sqlite:///{tmp_path / 'loa.db'}",
        tmp_path,
        LOA_SMS_CHANNEL="twilio",
        LOA_TWILIO_ACCOUNT_SID=ACCOUNT,
    )
    result = run_loa("worker", env=env, check=False)
    assert result.returncode == 1
    assert "LOA_TWILIO_AUTH_TOKEN" in result.stderr


def test_dispatch_records_each_answer_and_suppresses_reported_numbers(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = _settings(
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        retry_base_seconds=60,
        max_attempts=5,
    )
    with session_scope(engine) as session:
        add_areas(session)
        for to in CANNED:
            add_recipient(session, to, now=clock())
        # Already on the list for another reason: an `invalid` report leaves it as it is.
        session.add(Suppression(phone="+84912000099", reason="manual", created_at=clock()))
    launch_and_fire(engine, settings, at="2026-05-08 07:30", fire_at=NOW, launched_at=clock())
    clock.now = NOW
    http = Canned()
    adapter = TwilioChannel(config_from_settings(settings), http_client=http)

    def lookup(_: str) -> Channel:
        return adapter

    assert dispatch_once(
        engine, worker_id="w", clock=clock, settings=settings, channel_for=lookup
    ) == len(CANNED)
    with session_scope(engine) as session:
        rows = session.execute(
            select(
                col(Recipient.phone),
                col(OutboxMessage.status),
                col(OutboxMessage.error_code),
                col(OutboxMessage.due_at),
            ).join(Recipient, col(Recipient.id) == col(OutboxMessage.recipient_id))
        ).all()
        suppressed = dict(
            session.execute(select(col(Suppression.phone), col(Suppression.reason))).all()
        )
        audited = session.scalars(
            select(col(AuditEntry.entity_id)).where(
                col(AuditEntry.action) == "suppression.reported"
            )
        ).all()
    status = {phone: (s, code) for phone, s, code, _ in rows}
    due = {phone: d for phone, _, _, d in rows}
    assert status["+84912000001"] == ("sent", None)
    for to in ("+84912000002", "+84912000006", "+84912000007", "+84912000017"):
        assert status[to] == ("failed", EXPECTED[to][1])
    assert status["+84912000008"] == ("planned", "20429")
    assert due["+84912000008"] >= NOW + timedelta(seconds=7)
    assert status["+84912000016"] == ("planned", "20003")  # the account, not the message
    for to in ("+84912000010", "+84912000012", "+84912000013"):
        assert status[to][0] == "unknown"  # may have been sent: reconciled, never re-sent
    assert suppressed == {
        "+84912000002": "invalid",
        "+84912000003": "invalid",
        "+84912000004": "invalid",
        "+84912000005": "invalid",
        "+84912000006": "opt_out",
        "+84912000099": "manual",
    }
    assert sorted(audited) == sorted(set(suppressed) - {"+84912000099"})
