"""Idempotency-Key over HTTP, on SQLite and PostgreSQL: a repeat replays the first response and
does nothing else; the same key with another request is a 422; a repeat while the first is still
processed is a 409; a failed request keeps nothing; keys expire and are purged; the stored
response commits with the work or not at all; on PostgreSQL, requests with the same key at once
have one effect."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlmodel import col

import api.routes.campaigns
import api.routes.waves
from api.app import create_app
from channels.base import OutgoingMessage, SendResult
from channels.registry import channel_for
from loa import idempotency
from loa.apikeys import Role, create_key
from loa.db import make_engine, session_scope
from loa.models import ApiKey, AuditEntry, Campaign, IdempotencyKey, Suppression, Wave
from loa.settings import Settings
from scheduler.lifecycle import approve_campaign, create_campaign
from scheduler.spec import validate_spec
from tests.builders import add_areas, add_recipient
from tests.conftest import FakeClock

BASE = "/api/v1/campaigns"
SPEC: dict[str, Any] = {
    "name": "Tháng vận động BHXH 2026",
    "waves": [
        {
            "name": "Lễ ra quân",
            "channel": "sms",
            "class": "info",
            "at": "2026-05-08 07:30",
            "audience": {"areas": ["42"]},
            "template": "BHXH: {{ name }} oi, thang 5 la Thang van dong BHXH toan dan.",
        }
    ],
}
KEY = "5c1e0b8a-8d3e-4f52-9a7e-0d3c6b1f2a44"


@pytest.fixture(autouse=True)
def people(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        add_recipient(session, "+84912000001", now=clock(), area="18301")


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine, clock=clock)) as test_client:
        yield test_client


def _bearer(engine: Engine, clock: FakeClock, role: Role = Role.ADMIN) -> dict[str, str]:
    with session_scope(engine) as session:
        return {
            "Authorization": "Bearer " + create_key(session, role=role, actor="t", now=clock()).key
        }


@pytest.fixture
def admin(engine: Engine, clock: FakeClock) -> dict[str, str]:
    return _bearer(engine, clock)


def _with_key(headers: dict[str, str], key: str = KEY) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


def _count(engine: Engine, model: Any) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _actions(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        return list(session.scalars(select(col(AuditEntry.action)).order_by(col(AuditEntry.id))))


def _create(engine: Engine, settings: Settings, clock: FakeClock) -> int:
    with session_scope(engine) as session:
        campaign = create_campaign(
            session, spec=validate_spec(SPEC, source="t"), actor="t", now=clock(), settings=settings
        )
        assert campaign.id is not None
        return campaign.id


# --- replay, reuse, failure -------------------------------------------------------------------


def test_a_repeat_replays_the_first_response_and_does_nothing_else(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock
) -> None:
    first = client.post(BASE, json=SPEC, headers=_with_key(admin))
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    clock.advance(minutes=5)
    again = client.post(BASE, json=SPEC, headers=_with_key(admin))
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["content-type"] == "application/json"
    assert again.content == first.content  # byte for byte, created_at of the first included
    assert _count(engine, Campaign) == 1
    assert _actions(engine).count("campaign.create") == 1

    # A lifecycle verb: without the key a second approve would be a 409.
    campaign_id = first.json()["id"]
    approve = f"{BASE}/{campaign_id}/approve"
    approved = client.post(approve, headers=_with_key(admin, "approve-1"))
    replayed = client.post(approve, headers=_with_key(admin, "approve-1"))
    assert (approved.status_code, replayed.status_code) == (200, 200)
    assert replayed.json() == approved.json()
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert client.post(approve, headers=admin).status_code == 409
    assert _actions(engine).count("campaign.approve") == 1

    # Keys are the API key's own: the same key from another key is another request.
    other = _bearer(engine, clock)
    assert client.post(BASE, json=SPEC, headers=_with_key(other)).status_code == 201
    assert _count(engine, Campaign) == 2


def test_the_same_key_for_another_request_is_refused(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    assert client.post(BASE, json=SPEC, headers=_with_key(admin)).status_code == 201
    for method_path, body in [
        (BASE, {**SPEC, "name": "Another"}),  # another body
        (f"{BASE}/1/approve", None),  # another path
        (f"{BASE}?x=1", SPEC),  # another query
    ]:
        refused = client.post(method_path, json=body, headers=_with_key(admin))
        assert refused.status_code == 422, (method_path, refused.text)
        assert refused.json()["error"] == {
            "code": "idempotency_key_reused",
            "message": refused.json()["error"]["message"],
            "field": "Idempotency-Key",
        }
        assert "use a new key" in refused.json()["error"]["message"]
    assert _count(engine, Campaign) == 1
    assert _actions(engine) == ["apikey.create", "campaign.create"]


def test_a_failed_request_keeps_nothing_and_its_retry_runs(
    client: TestClient, admin: dict[str, str], engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    campaign_id = _create(engine, settings, clock)
    launch = f"{BASE}/{campaign_id}/launch"
    refused = client.post(launch, headers=_with_key(admin))  # a draft cannot be launched
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "conflict"
    assert _count(engine, IdempotencyKey) == 0
    assert client.post(f"{BASE}/{campaign_id}/approve", headers=admin).status_code == 200
    launched = client.post(launch, headers=_with_key(admin))
    assert launched.status_code == 200, launched.text
    assert "Idempotent-Replayed" not in launched.headers
    assert launched.json()["status"] == "scheduled"


@pytest.mark.parametrize(
    "value",
    ["", "x" * 256, "clé-é", "tab\there"],
    ids=["empty", "too long", "not ascii", "control character"],
)
def test_a_malformed_key_is_a_422_that_says_what_a_key_is(
    client: TestClient, admin: dict[str, str], engine: Engine, value: str
) -> None:
    refused = client.post(
        BASE, json=SPEC, headers=[*admin.items(), ("Idempotency-Key", value.encode("utf-8"))]
    )
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["field"]) == ("invalid", "Idempotency-Key")
    assert "a UUID is a good key" in error["message"]
    assert _count(engine, Campaign) == 0


def test_a_quoted_key_is_the_same_key(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    # The draft writes the header as a Structured Field string: "key".
    assert client.post(BASE, json=SPEC, headers=_with_key(admin, f'"{KEY}"')).status_code == 201
    again = client.post(BASE, json=SPEC, headers=_with_key(admin))
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _count(engine, Campaign) == 1


# --- expiry -----------------------------------------------------------------------------------


def test_keys_expire_and_are_purged(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock
) -> None:
    assert client.post(BASE, json=SPEC, headers=_with_key(admin)).status_code == 201
    clock.advance(hours=23, minutes=59)
    assert client.post(BASE, json=SPEC, headers=_with_key(admin)).headers["Idempotent-Replayed"]
    clock.advance(minutes=1)  # 24 h: LOA_IDEMPOTENCY_TTL_HOURS
    # Expired: the key is free, for this request or another one.
    renewed = client.post(BASE, json={**SPEC, "name": "Another"}, headers=_with_key(admin))
    assert renewed.status_code == 201
    assert "Idempotent-Replayed" not in renewed.headers
    assert _count(engine, Campaign) == 2

    for n in range(3):
        assert client.post(BASE, json=SPEC, headers=_with_key(admin, f"k{n}")).status_code == 201
    assert _count(engine, IdempotencyKey) == 4
    clock.advance(hours=25)
    assert idempotency.purge_expired(engine, now=clock(), batch=1) == 1
    # The next request with a key purges the expired ones (at most once a minute).
    assert client.post(BASE, json=SPEC, headers=_with_key(admin, "last")).status_code == 201
    with session_scope(engine) as session:
        assert list(session.scalars(select(col(IdempotencyKey.key)))) == ["last"]


# --- in flight --------------------------------------------------------------------------------


class _HeldChannel:
    """The configured SMS channel, except that a send waits until the test lets it go."""

    def __init__(self, settings: Settings) -> None:
        self.inner = channel_for("sms", settings)
        self.name = self.inner.name
        self.capabilities = self.inner.capabilities
        self.entered = threading.Event()
        self.go = threading.Event()
        self.batches = 0

    def send_batch(self, messages: Sequence[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        self.batches += 1
        self.entered.set()
        assert self.go.wait(60), "the test never let the send go"
        return self.inner.send_batch(messages, now=now)


def _in_thread(call: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[httpx.Response]]:
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(call()))
    thread.start()
    return thread, answers


def test_a_repeat_while_the_first_is_in_flight_is_a_409(
    client: TestClient,
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A test send: its work happens outside the request's transaction, so its key is held in a
    row committed before the send."""
    campaign_id = _create(engine, settings, clock)
    with session_scope(engine) as session:
        wave_id = session.scalars(select(col(Wave.id))).one()
    held = _HeldChannel(settings)
    monkeypatch.setattr(api.routes.waves, "channel_for", lambda name, s: held)
    planner = _with_key(_bearer(engine, clock, Role.PLANNER))
    url = f"{BASE}/{campaign_id}/waves/{wave_id}/test-send"
    body = {"to": ["0987654321"], "variables": {"name": "Thu"}}

    thread, answers = _in_thread(lambda: client.post(url, json=body, headers=planner))
    assert held.entered.wait(60)
    repeat = client.post(url, json=body, headers=planner)
    assert repeat.status_code == 409, repeat.text
    assert repeat.json()["error"]["code"] == "idempotency_key_in_flight"
    assert repeat.json()["error"]["field"] == "Idempotency-Key"
    held.go.set()
    thread.join(60)
    assert answers[0].status_code == 200, answers[0].text

    replayed = client.post(url, json=body, headers=planner)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json() == answers[0].json()
    assert held.batches == 1
    assert _actions(engine).count("wave.test_send") == 1


def test_a_claim_left_by_a_crash_is_taken_over_after_the_lock_period(
    client: TestClient,
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
) -> None:
    """A process died between claiming a key and storing the response (of a route whose work
    commits by itself): the key is in flight until LOA_IDEMPOTENCY_LOCK_SECONDS have passed."""
    planner = _bearer(engine, clock, Role.PLANNER)
    prefix = planner["Authorization"].split("_")[1]
    with session_scope(engine) as session:
        api_key_id = session.scalars(
            select(col(ApiKey.id)).where(col(ApiKey.prefix) == prefix)
        ).one()
    assert api_key_id is not None
    csv = b"phone\n0912000009\n"
    crashed = idempotency.claim_apart(
        engine,
        api_key_id,
        KEY,
        None,  # its streamed body was never read
        now=clock(),
        ttl=timedelta(hours=24),
        lock_for=timedelta(seconds=settings.idempotency_lock_seconds),
    )
    assert isinstance(crashed, idempotency.Held)
    headers = {**_with_key(planner), "Content-Type": "text/csv"}
    url = "/api/v1/suppressions/import"
    assert client.post(url, content=csv, headers=headers).status_code == 409
    assert _count(engine, Suppression) == 0
    clock.advance(seconds=settings.idempotency_lock_seconds)
    taken_over = client.post(url, content=csv, headers=headers)
    assert taken_over.status_code == 200, taken_over.text
    assert taken_over.json()["added"] == 1
    assert client.post(url, content=csv, headers=headers).headers["Idempotent-Replayed"] == "true"
    # Had the first one been alive after all, its response would not overwrite the new one.
    stale = idempotency.StoredResponse(200, {}, b"{}")
    assert not idempotency.complete_apart(engine, api_key_id, KEY, crashed, "x" * 64, stale)
    assert client.post(url, content=csv, headers=headers).json() == taken_over.json()


# --- streamed bodies --------------------------------------------------------------------------


def test_an_import_is_fingerprinted_by_its_streamed_body(
    client: TestClient, engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    planner = {**_with_key(_bearer(engine, clock, Role.PLANNER)), "Content-Type": "text/csv"}
    url = "/api/v1/suppressions/import"
    first = client.post(url, content=b"phone\n0912000005\n0912000006\n", headers=planner)
    assert first.status_code == 200, first.text
    assert first.json()["added"] == 2
    again = client.post(url, content=b"phone\n0912000005\n0912000006\n", headers=planner)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    other = client.post(url, content=b"phone\n0912000007\n0912000008\n", headers=planner)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    with session_scope(engine) as session:
        assert sorted(session.scalars(select(col(Suppression.phone)))) == [
            "+84912000005",
            "+84912000006",
        ]
    assert _actions(engine).count("suppression.import") <= 1
    # The same file under the lower API body limit still streams (imports keep their own limit).
    small = create_app(
        settings.model_copy(update={"api_max_body_bytes": 1024}), engine, clock=clock
    )
    big = b"phone\n" + b"".join(b"09120%05d\n" % n for n in range(200))
    assert len(big) > 1024
    with TestClient(small) as small_client:
        imported = small_client.post(
            url, content=big, headers={**planner, "Idempotency-Key": "big-file"}
        )
    assert imported.status_code == 200, imported.text


# --- atomicity --------------------------------------------------------------------------------


def test_the_stored_response_commits_with_the_work_or_neither_does(
    client: TestClient,
    admin: dict[str, str],
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store of the response fails after the campaign was written (as a crash would stop
    it): the campaign is rolled back with it, so the retry creates it once."""

    def fail(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the process died here")

    with monkeypatch.context() as patch:
        patch.setattr(idempotency, "complete_in", fail)
        failed = client.post(BASE, json=SPEC, headers=_with_key(admin))
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "internal_error"
    assert _count(engine, Campaign) == 0
    assert _count(engine, IdempotencyKey) == 0
    retried = client.post(BASE, json=SPEC, headers=_with_key(admin))
    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried.headers
    assert _count(engine, Campaign) == 1


# --- requests with the same key at once ------------------------------------------------------


def test_requests_with_one_key_at_once_have_one_effect(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    """Eight at once, released together: one creates the campaign; on PostgreSQL the others
    replay it or are told 409 (in flight), on SQLite they wait for the writer and replay it."""
    barrier = threading.Barrier(8)
    results: list[httpx.Response] = []

    def create() -> None:
        barrier.wait(60)
        results.append(client.post(BASE, json=SPEC, headers=_with_key(admin)))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = [r.status_code for r in results]
    assert len(statuses) == 8 and set(statuses) <= {201, 409}, statuses
    created = [r for r in results if r.status_code == 201]
    assert sum("Idempotent-Replayed" not in r.headers for r in created) == 1
    assert len({r.json()["id"] for r in created}) == 1
    assert _count(engine, Campaign) == 1
    assert _actions(engine).count("campaign.create") == 1


def test_a_repeat_of_a_request_in_its_transaction_is_a_409_on_postgresql(
    pg_url: str, tmp_path: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first approve is held inside the route, its transaction open with the key's advisory
    lock: the repeat does not wait for it (on SQLite it would wait for the one writer)."""
    settings = Settings(database_url=pg_url, data_dir=tmp_path)
    engine = make_engine(settings)
    with session_scope(engine) as session:
        add_areas(session)
    campaign_id = _create(engine, settings, clock)
    admin = _bearer(engine, clock)
    app = create_app(settings, engine, clock=clock)

    entered, go = threading.Event(), threading.Event()
    real_approve = approve_campaign

    def held_approve(*args: Any, **kwargs: Any) -> Campaign:
        entered.set()
        assert go.wait(60)
        return real_approve(*args, **kwargs)

    url = f"{BASE}/{campaign_id}/approve"
    with TestClient(app) as client:
        with monkeypatch.context() as patch:
            patch.setattr(api.routes.campaigns, "approve_campaign", held_approve)
            thread, answers = _in_thread(lambda: client.post(url, headers=_with_key(admin)))
            assert entered.wait(60)
            repeat = client.post(url, headers=_with_key(admin))
            go.set()
            thread.join(60)
        assert repeat.status_code == 409, repeat.text
        assert repeat.json()["error"]["code"] == "idempotency_key_in_flight"
        assert answers[0].status_code == 200
        assert client.post(url, headers=_with_key(admin)).headers["Idempotent-Replayed"] == "true"
    assert _actions(engine).count("campaign.approve") == 1
    engine.dispose()
