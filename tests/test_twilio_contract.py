"""Contract: every request the Twilio adapter makes is valid for Twilio's own OpenAPI description.

Stoplight Prism (tests/contract, installed by `make test`) mocks the API from
../shared/contracts/twilio_api_v2010.json with `--errors`, so a request that breaks the
description is answered 422 instead of 201. The real `twilio` SDK sends through the adapter,
pointed at Prism with LOA_TWILIO_API_URL (the SDK's `client.api.base_url`)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlmodel import col
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response

from channels.base import Outcome, OutgoingMessage
from channels.registry import channel_lookup
from channels.twilio import TwilioChannel, config_from_settings
from loa.db import session_scope
from loa.models import OutboxMessage
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from tests.builders import add_areas, add_recipient, launch_and_fire
from tests.conftest import FakeClock

ROOT = Path(__file__).resolve().parent.parent
PRISM = ROOT / "tests" / "contract" / "node_modules" / ".bin" / "prism"
SPEC = ROOT.parent / "shared" / "contracts" / "twilio_api_v2010.json"
ACCOUNT = "AC" + "0123456789abcdef" * 2
SERVICE = "MG" + "fedcba9876543210" * 2
NOW = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not PRISM.exists():
        pytest.fail(f"Prism is not installed at {PRISM}: run make test (npm ci in tests/contract)")
    if not SPEC.exists():
        pytest.fail(f"the Twilio API description is missing: {SPEC}")
    port = _free_port()
    log = tmp_path_factory.mktemp("prism") / "prism.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(PRISM), "mock", "--errors", "-h", "127.0.0.1", "-p", str(port), str(SPEC)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Prism reads the 1.9 MB description before it listens (about 15 s on this machine).
        deadline = time.monotonic() + 120
        while b"Prism is listening" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Prism did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


class Recording(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's own async HTTP client, keeping every request's form and answer status."""

    def __init__(self) -> None:
        super().__init__(pool_connections=False)
        self.exchanges: list[tuple[dict[str, Any], int, str]] = []

    async def request(self, method: str, url: str, **kwargs: Any) -> Response:
        response = await super().request(method, url, **kwargs)
        self.exchanges.append((dict(kwargs.get("data") or {}), response.status_code, response.text))
        return response


def _settings(prism: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "sms_channel": "twilio",
        "twilio_account_sid": ACCOUNT,
        "twilio_auth_token": "secret-token",
        "twilio_from": "+15005550006",
        "public_url": "https://loa.example.vn/",
        "twilio_api_url": prism,
        "twilio_concurrency": 8,
    }
    values.update(extra)
    return Settings(**values)


def _channel(settings: Settings) -> tuple[TwilioChannel, Recording]:
    http = Recording()
    return TwilioChannel(config_from_settings(settings), http_client=http), http


def test_messages_from_a_number_validate_and_are_accepted(prism: str) -> None:
    channel, http = _channel(_settings(prism))
    messages = [
        OutgoingMessage(100 + i, 7, f"+8491234{i:04d}", f"BHXH tinh: thong bao so {i}")
        for i in range(12)
    ]
    messages.append(OutgoingMessage(200, 7, "+84912345678", "Thẻ BHYT của ông Nguyễn Văn Đức"))
    results = channel.send_batch(messages, now=NOW)

    assert [s for _, s, _ in http.exchanges] == [201] * 13, http.exchanges
    assert sorted(r.message_id for r in results) == sorted(m.message_id for m in messages)
    assert {r.outcome for r in results} == {Outcome.ACCEPTED}
    assert all(r.provider_id and r.provider_id.startswith("SM") for r in results)
    sent = {form["To"]: form for form, _, _ in http.exchanges}
    vietnamese = sent["+84912345678"]
    assert vietnamese["Body"] == "Thẻ BHYT của ông Nguyễn Văn Đức"
    assert vietnamese["From"] == "+15005550006"
    assert "MessagingServiceSid" not in vietnamese
    assert vietnamese["StatusCallback"] == "https://loa.example.vn/webhooks/twilio/status?m=200"
    assert "ValidityPeriod" not in vietnamese  # no deadline: Twilio's default


def test_a_messaging_service_and_a_deadline_validate(prism: str) -> None:
    channel, http = _channel(_settings(prism, twilio_from="", twilio_messaging_service_sid=SERVICE))
    deadline = NOW + timedelta(hours=2, seconds=5)
    far = NOW + timedelta(days=2)
    results = channel.send_batch(
        [
            OutgoingMessage(1, 7, "+84912000001", "hai gio", expires_at=deadline),
            OutgoingMessage(2, 7, "+84912000002", "hai ngay", expires_at=far),
        ],
        now=NOW,
    )
    assert [s for _, s, _ in http.exchanges] == [201, 201], http.exchanges
    assert {r.outcome for r in results} == {Outcome.ACCEPTED}
    forms = {form["To"]: form for form, _, _ in http.exchanges}
    assert forms["+84912000001"]["MessagingServiceSid"] == SERVICE
    assert "From" not in forms["+84912000001"]
    assert forms["+84912000001"]["ValidityPeriod"] == 7205
    assert "ValidityPeriod" not in forms["+84912000002"]  # beyond 36,000 s: Twilio's maximum


def test_prism_refuses_a_request_that_breaks_the_description(prism: str) -> None:
    """The contract has teeth: the same adapter, with a sender the description forbids (a
    Messaging Service SID that is not MG + 32 hex digits, slipped past the settings check),
    gets 422 from Prism, and the message is reported permanent, not accepted."""
    settings = _settings(prism, twilio_from="", twilio_messaging_service_sid=SERVICE)
    config = config_from_settings(settings)
    broken = config.__class__(**{**config.__dict__, "messaging_service_sid": "MG-not-a-sid"})
    http = Recording()
    channel = TwilioChannel(broken, http_client=http)
    [result] = channel.send_batch([OutgoingMessage(1, 7, "+84912000001", "x")], now=NOW)
    assert [s for _, s, _ in http.exchanges] == [422]
    assert "MessagingServiceSid" in http.exchanges[0][2]
    assert result.outcome == Outcome.PERMANENT
    assert result.error_code == "422"


def test_a_wave_dispatched_through_twilio_is_sent_with_twilios_ids(
    prism: str, engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    """The whole path on both databases: the registry builds the adapter from the settings, the
    dispatcher sends a wave through Prism and records Twilio's message ids."""
    settings = _settings(
        prism, database_url=settings.database_url, data_dir=settings.data_dir, worker_batch_size=50
    )
    with session_scope(engine) as session:
        add_areas(session)
        for i in range(5):
            add_recipient(session, f"+8491200010{i}", now=clock())
    launch_and_fire(engine, settings, at="2026-05-08 07:30", fire_at=NOW, launched_at=clock())
    clock.now = NOW
    lookup = channel_lookup(settings)
    assert dispatch_once(engine, worker_id="w", clock=clock, settings=settings, channel_for=lookup)
    channel = lookup("sms")
    assert isinstance(channel, TwilioChannel)
    channel.close()
    with session_scope(engine) as session:
        rows = session.execute(
            select(col(OutboxMessage.status), col(OutboxMessage.provider_id))
        ).all()
    assert len(rows) == 5
    assert {status for status, _ in rows} == {"sent"}
    assert all(provider_id and provider_id.startswith("SM") for _, provider_id in rows)
