"""The HTTP gateway adapter against a real HTTP server on loopback playing the aggregator: each
kind of answer lands in the right outcome, a retry of one message carries the same request id
(and the aggregator's duplicate answer counts as accepted), and through the dispatcher each
message gets its status, its adapter and its number suppressed when reported invalid (both
databases). Bad configuration is refused naming the gateway and the field."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlmodel import col

from channels.base import Outcome, OutgoingMessage, RecipientProblem
from channels.gateway_config import parse_gateways
from channels.http_gateway import (
    HttpGatewayChannel,
    fill,
    gateway_from_settings,
    message_id_from_request_id,
    request_id,
)
from channels.registry import channel_lookup, check_channel
from loa.db import session_scope
from loa.errors import InvalidInput
from loa.models import DeliveryEvent, OutboxMessage, Suppression
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from tests.builders import add_areas, add_recipient, launch_and_fire
from tests.clirun import loa_env, run_loa
from tests.conftest import FakeClock
from tests.gateway_stub import (
    API_KEY,
    GATEWAY_ENV,
    Answer,
    Stub,
    code,
    gateway_entry,
    running,
    write_gateways,
)

NOW = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)

# By national number: what the stub aggregator answers.
ANSWERS: dict[str, Answer | str] = {
    "0912000001": "accept",
    "0912000002": code("06", "content refused"),
    "0912000003": code("03", "invalid number"),
    "0912000004": code("04", "subscriber refused brandname SMS"),
    "0912000005": code("05", "throttled"),
    "0912000006": code("01", "invalid api key"),
    "0912000007": (500, b"<html>oops</html>", {}),
    "0912000008": (429, {"code": "05"}, {"Retry-After": "7"}),
    "0912000009": "sleep",
    "0912000010": code("77", "a code nobody mapped"),
    "0912000011": (200, b"OK", {}),  # 2xx without a readable code
    "0912000012": (404, b"Not Found", {}),
}
EXPECTED: dict[str, tuple[Outcome, str | None]] = {
    "0912000001": (Outcome.ACCEPTED, None),
    "0912000002": (Outcome.PERMANENT, "06"),
    "0912000003": (Outcome.PERMANENT, "03"),
    "0912000004": (Outcome.PERMANENT, "04"),
    "0912000005": (Outcome.TRANSIENT, "05"),
    "0912000006": (Outcome.TRANSIENT, "01"),
    "0912000007": (Outcome.AMBIGUOUS, "http_500"),
    "0912000008": (Outcome.TRANSIENT, "http_429"),
    "0912000009": (Outcome.AMBIGUOUS, "timeout"),
    "0912000010": (Outcome.PERMANENT, "77"),
    "0912000011": (Outcome.AMBIGUOUS, "unreadable"),
    "0912000012": (Outcome.TRANSIENT, "http_404"),
}


def _answer(phone: str) -> Answer | str:
    return ANSWERS[phone]


def _adapter(stub: Stub, **override: Any) -> HttpGatewayChannel:
    gateways = parse_gateways(
        {"gateways": {"vn": gateway_entry(stub.url, **override)}},
        source="test",
        environ=GATEWAY_ENV,
    )
    return HttpGatewayChannel(gateways["vn"], callback_url="https://loa.example.vn/cb")


def _e164(national: str) -> str:
    return "+84" + national[1:]


def test_each_answer_of_the_aggregator_lands_in_its_outcome() -> None:
    with running(Stub(answer=_answer)) as stub:
        adapter = _adapter(stub)
        messages = [
            OutgoingMessage(n, 1, _e164(phone), "Thẻ BHYT sắp hết hạn")
            for n, phone in enumerate(ANSWERS, start=1)
        ]
        results = {r.message_id: r for r in adapter.send_batch(messages, now=NOW)}
        adapter.close()
    assert len(results) == len(ANSWERS)
    for n, phone in enumerate(ANSWERS, start=1):
        outcome, error = EXPECTED[phone]
        assert (results[n].outcome, results[n].error_code) == (outcome, error), phone
    assert results[1].provider_id == "sms-1"
    assert results[3].recipient_problem == RecipientProblem.INVALID
    assert results[4].recipient_problem == RecipientProblem.OPTED_OUT
    assert results[8].retry_after == 7
    # Refusing the account or the address makes the adapter unavailable; a throttle does not.
    assert results[6].unavailable and results[12].unavailable and not results[5].unavailable
    # What the aggregator received: the example's body, filled and typed, with the API key.
    first = stub.requests_for("0912000001")[0]
    assert first == {
        "phone": "0912000001",
        "message": "Thẻ BHYT sắp hết hạn",
        "brandname": "BHXH-HT",
        "requestId": "loa-1",
        "isUnicode": 1,
        "callbackUrl": "https://loa.example.vn/cb",
        "type": 2,
    }
    assert all(h.get("X-Api-Key") == API_KEY for h in stub.headers)


def test_a_refused_connection_is_transient_never_ambiguous() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stub = Stub()
    stub.url = f"http://127.0.0.1:{port}/send"
    adapter = _adapter(stub)
    [result] = adapter.send_batch([OutgoingMessage(1, 1, "+84912000001", "x")], now=NOW)
    adapter.close()
    assert (result.outcome, result.error_code) == (Outcome.TRANSIENT, "connect")


def test_a_retry_carries_the_same_request_id_and_the_duplicate_answer_is_accepted() -> None:
    with running(Stub()) as stub:
        adapter = _adapter(stub)
        message = OutgoingMessage(42, 1, "+84912000001", "Nhac han the BHYT")
        [first] = adapter.send_batch([message], now=NOW)
        [again] = adapter.send_batch([message], now=NOW)
        adapter.close()
    assert [r["requestId"] for r in stub.requests] == ["loa-42", "loa-42"]
    assert len(stub.taken) == 1  # the aggregator sent it once
    assert first.outcome == again.outcome == Outcome.ACCEPTED
    assert first.provider_id == again.provider_id == "sms-1"
    assert again.detail and "duplicate" in again.detail


def test_a_message_past_its_deadline_is_not_sent() -> None:
    with running(Stub()) as stub:
        adapter = _adapter(stub)
        late = OutgoingMessage(1, 1, "+84912000001", "x", expires_at=NOW - timedelta(seconds=1))
        [result] = adapter.send_batch([late], now=NOW)
        adapter.close()
    assert (result.outcome, result.error_code) == (Outcome.PERMANENT, "expired")
    assert stub.requests == []


def test_the_body_is_filled_as_json_values_and_request_ids_map_back() -> None:
    body = {"a": "${body}", "b": ["${to}", {"c": "${message_id}"}], "d": "id ${message_id}"}
    text = 'He said "stop"\n\\ ${to}'
    filled = fill(body, {"body": text, "to": "+849", "message_id": 7})
    # Quotes, a backslash, a placeholder in the text: a value, never JSON or a template.
    assert filled == {"a": text, "b": ["+849", {"c": 7}], "d": "id 7"}
    assert message_id_from_request_id("loa-", request_id("loa-", 123)) == 123
    assert message_id_from_request_id("loa-", "other-123") is None
    assert message_id_from_request_id("loa-", "loa-12x") is None


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"url": "sms.example.vn/send"}, "gateways.vn.url"),
        ({"method": "GET"}, "gateways.vn.method"),
        ({"body": {"to": "${phone}"}}, "gateways.vn.body"),
        ({"auth": {"type": "bearer"}}, "gateways.vn.auth.token_env"),
        ({"auth": {"type": "oauth"}}, "gateways.vn.auth"),
        (
            {"response": {"code": "code", "accepted": ["0"], "transient": [0]}},
            "gateways.vn.response",
        ),
        ({"concurrency": 0}, "gateways.vn.concurrency"),
        ({"surprise": 1}, "gateways.vn.surprise"),
    ],
)
def test_a_bad_configuration_is_refused_naming_the_gateway_and_field(
    override: dict[str, Any], where: str
) -> None:
    url = override.pop("url", "http://x.vn/send")
    with pytest.raises(InvalidInput) as refused:
        parse_gateways(
            {"gateways": {"vn": gateway_entry(url, **override)}},
            source="gateways.yaml",
            environ=GATEWAY_ENV,
        )
    assert refused.value.message.startswith("gateways.yaml: ")
    assert where in refused.value.message


def test_a_missing_secret_or_gateway_is_refused_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_gateways(tmp_path / "gw.yaml", {"vn": gateway_entry("http://x.vn/send")})
    settings = Settings(
        data_dir=tmp_path,
        sms_channel="gateway:vn",
        gateways_file=path,
        public_url="https://loa.example.vn",
    )
    monkeypatch.delenv("LOA_TEST_GW_KEY", raising=False)
    with pytest.raises(InvalidInput) as refused:
        check_channel("sms", settings)
    assert "gateways.vn.auth.key_env" in refused.value.message
    assert "LOA_TEST_GW_KEY" in refused.value.message
    for key, value in GATEWAY_ENV.items():
        monkeypatch.setenv(key, value)
    check_channel("sms", settings)
    _, callback = gateway_from_settings(settings, "vn")
    assert callback == "https://loa.example.vn/webhooks/gateway/vn/status"
    with pytest.raises(InvalidInput) as refused:
        check_channel("sms", settings.model_copy(update={"sms_channel": "gateway:viettel"}))
    assert "no gateway 'viettel'" in refused.value.message and "vn" in refused.value.message
    with pytest.raises(InvalidInput) as refused:
        check_channel("sms", settings.model_copy(update={"public_url": ""}))
    assert "LOA_PUBLIC_URL" in refused.value.message
    with pytest.raises(InvalidInput) as refused:
        check_channel("sms", settings.model_copy(update={"gateways_file": None}))
    assert "LOA_GATEWAYS_FILE" in refused.value.message
    with pytest.raises(InvalidInput) as refused:
        check_channel("sms", settings.model_copy(update={"sms_channel": "gateway:vn,,console"}))
    assert "empty name" in refused.value.message


def test_dispatch_through_the_gateway_records_outcomes_and_the_adapter(
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in GATEWAY_ENV.items():
        monkeypatch.setenv(key, value)
    phones = ["0912000001", "0912000002", "0912000003", "0912000005", "0912000007"]
    with session_scope(engine) as session:
        add_areas(session)
        for phone in phones:
            add_recipient(session, _e164(phone), now=clock())
    with running(Stub(answer=_answer)) as stub:
        gw_settings = settings.model_copy(
            update={
                "sms_channel": "gateway:vn",
                "gateways_file": write_gateways(
                    tmp_path / "gw.yaml", {"vn": gateway_entry(stub.url)}
                ),
                "public_url": "https://loa.example.vn",
            }
        )
        launch_and_fire(
            engine, gw_settings, at="2026-05-08 07:30", fire_at=NOW, launched_at=clock()
        )
        clock.now = NOW
        lookup = channel_lookup(gw_settings)
        assert dispatch_once(
            engine, worker_id="w", clock=clock, settings=gw_settings, channel_for=lookup
        ) == len(phones)
    with session_scope(engine) as session:
        rows = session.execute(
            select(
                col(OutboxMessage.id),
                col(OutboxMessage.status),
                col(OutboxMessage.adapter),
                col(OutboxMessage.provider_id),
                col(OutboxMessage.error_code),
            ).order_by(col(OutboxMessage.id))
        ).all()
        suppressed = session.scalars(select(col(Suppression.phone))).all()
        event_adapters = set(session.scalars(select(col(DeliveryEvent.adapter))).all())
    by_status = {r.error_code or r.status: r for r in rows}
    assert [r.status for r in rows] == ["sent", "failed", "failed", "planned", "unknown"]
    assert by_status["sent"].provider_id == "sms-1"
    assert {r.adapter for r in rows} == {"gateway:vn"} == event_adapters
    assert suppressed == ["+84912000003"]
    # The request id of each message is Loa's outbox id: the aggregator's de-duplication key.
    assert sorted(r["requestId"] for r in stub.requests) == sorted(f"loa-{r.id}" for r in rows)


def test_the_cli_worker_refuses_a_bad_gateways_file_naming_gateway_and_field(
    tmp_path: Path,
) -> None:
    entry = gateway_entry("http://127.0.0.1:9/send")
    entry["response"]["accepted"] = []
    path = write_gateways(tmp_path / "gw.yaml", {"viettel": entry})
    env = loa_env(
        f"sqlite:///{tmp_path / 'loa.db'}",
        tmp_path,
        LOA_SMS_CHANNEL="twilio,gateway:viettel",
        LOA_TWILIO_ACCOUNT_SID="AC" + "ab" * 16,
        LOA_TWILIO_AUTH_TOKEN="token",
        LOA_TWILIO_FROM="+15005550006",
        LOA_PUBLIC_URL="https://loa.example.vn",
        LOA_GATEWAYS_FILE=str(path),
        **GATEWAY_ENV,
    )
    result = run_loa("worker", env=env, check=False)
    assert result.returncode == 1
    assert "gateways.viettel.response" in result.stderr and "accepted" in result.stderr
