"""The HTTP API with API keys: who may call which campaign endpoint, the lifecycle over HTTP with
`key:<prefix>` in the audit log, four-eyes approval between keys, and errors in one shape (409 for
an illegal transition, 422 for a bad spec or bad JSON). On SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlmodel import col

from api.app import create_app
from loa.apikeys import Role, create_key, revoke_key
from loa.db import session_scope
from loa.models import AuditEntry, Campaign, MessageStatus, OutboxMessage, Wave, WaveStatus
from loa.settings import Settings
from scheduler.lifecycle import (
    approve_campaign,
    cancel_campaign,
    create_campaign,
    launch_campaign,
    pause_campaign,
)
from scheduler.spec import validate_spec
from scheduler.tick import run_tick
from tests.builders import add_areas, add_recipient
from tests.conftest import FakeClock

BASE = "/api/v1/campaigns"
SPEC: dict[str, Any] = {
    "name": "Tháng vận động BHXH 2026",
    "timezone": "Asia/Ho_Chi_Minh",
    "waves": [
        {
            "name": "Lễ ra quân",
            "channel": "sms",
            "class": "info",
            "at": "2026-05-08 07:30",  # 00:30 UTC; the clock starts at 00:00 UTC
            "audience": {"areas": ["42"]},
            "template": "BHXH: {{ name }} oi, thang 5 la Thang van dong BHXH toan dan.",
        },
        {
            "name": "Nhắc lại",
            "channel": "sms",
            "class": "care",
            "at": "2026-05-09 07:30",
            "audience": {"areas": ["42"]},
            "template": "BHXH: {{ name }} oi, dung quen tham gia BHXH tu nguyen.",
        },
    ],
}
FIRST_FIRE = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)
PHONES = [f"+8491200000{i}" for i in range(1, 5)]


@dataclass(frozen=True)
class Keys:
    """A key of every role, and keys that must be refused."""

    by_role: dict[Role, str]
    revoked: str
    expired: str
    wrong_secret: str  # a real prefix with another secret

    def prefix(self, role: Role) -> str:
        return self.by_role[role].split("_")[1]


@pytest.fixture(autouse=True)
def people(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        for phone in PHONES:
            add_recipient(session, phone, now=clock(), area="18301")


@pytest.fixture
def keys(engine: Engine, clock: FakeClock) -> Keys:
    with session_scope(engine) as session:
        by_role = {
            role: create_key(
                session,
                role=role,
                actor="test",
                now=clock(),
                area_code="440" if role == Role.DISTRICT else None,
            ).key
            for role in Role
        }
        revoked = create_key(session, role="admin", actor="test", now=clock()).key
        revoke_key(session, revoked.split("_")[1], actor="test", now=clock())
        expired = create_key(
            session,
            role="admin",
            actor="test",
            now=clock() - timedelta(days=2),
            expires_in=timedelta(days=1),
        ).key
    real_prefix = by_role[Role.ADMIN].split("_")[1]
    return Keys(by_role, revoked, expired, wrong_secret=f"loa_{real_prefix}_{'x' * 43}")


def _app_client(settings: Settings, engine: Engine, clock: FakeClock) -> TestClient:
    return TestClient(create_app(settings, engine, clock=clock))


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    with _app_client(settings, engine, clock) as test_client:
        yield test_client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _campaign_in(state: str, engine: Engine, settings: Settings, clock: FakeClock) -> int:
    """A campaign brought to `state` with the service functions (not under test here)."""
    with session_scope(engine) as session:
        campaign = create_campaign(
            session,
            spec=validate_spec(SPEC, source="test"),
            actor="cli:planner",
            now=clock(),
            settings=settings,
        )
        assert campaign.id is not None
        if state in ("approved", "scheduled", "paused"):
            approve_campaign(
                session, campaign.id, actor="cli:approver", now=clock(), settings=settings
            )
        if state in ("scheduled", "paused"):
            launch_campaign(
                session, campaign.id, actor="cli:approver", now=clock(), settings=settings
            )
        if state == "paused":
            pause_campaign(session, campaign.id, actor="cli:approver", now=clock())
        if state == "cancelled":
            cancel_campaign(session, campaign.id, actor="cli:approver", now=clock())
        return campaign.id


def _status(engine: Engine, campaign_id: int) -> str:
    with session_scope(engine) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        return campaign.status


def _audit(engine: Engine) -> list[tuple[str, str, str]]:
    """(action, entity id, actor) of every audit entry, oldest first."""
    with session_scope(engine) as session:
        rows = session.execute(
            select(
                col(AuditEntry.action), col(AuditEntry.entity_id), col(AuditEntry.actor)
            ).order_by(col(AuditEntry.id))
        ).all()
    return [(a, e, who) for a, e, who in rows]


def _count_campaigns(engine: Engine) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(Campaign)) or 0)


# --- who may call what ------------------------------------------------------------------------

READERS = {Role.ADMIN, Role.PLANNER, Role.APPROVER, Role.OPERATOR}
PLANNERS = {Role.PLANNER, Role.ADMIN}
APPROVERS = {Role.APPROVER, Role.ADMIN}
# endpoint: (method, path after /api/v1/campaigns, state the campaign needs, roles allowed)
ENDPOINTS: dict[str, tuple[str, str, str | None, set[Role]]] = {
    "create": ("POST", "", None, PLANNERS),
    "list": ("GET", "", None, READERS),
    "show": ("GET", "/{id}", "draft", READERS),
    "stats": ("GET", "/{id}/stats", "draft", READERS),
    "approve": ("POST", "/{id}/approve", "draft", APPROVERS),
    "launch": ("POST", "/{id}/launch", "approved", APPROVERS),
    "pause": ("POST", "/{id}/pause", "scheduled", APPROVERS),
    "resume": ("POST", "/{id}/resume", "paused", APPROVERS),
    "cancel": ("POST", "/{id}/cancel", "draft", APPROVERS),
}
REFUSED = ["no key", "unknown key", "wrong secret", "revoked key", "expired key"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_access_matrix(
    endpoint: str,
    client: TestClient,
    keys: Keys,
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
) -> None:
    """Every caller against this endpoint: 2xx inside the role, 403 outside it, 401 without a
    valid key; a refused call changes nothing."""
    method, path, state, allowed = ENDPOINTS[endpoint]
    callers: dict[str, dict[str, str]] = {
        "no key": {},
        "unknown key": bearer("loa_0badc0de_" + "y" * 43),
        "wrong secret": bearer(keys.wrong_secret),
        "revoked key": bearer(keys.revoked),
        "expired key": bearer(keys.expired),
        **{str(role): bearer(key) for role, key in keys.by_role.items()},
    }
    assert set(callers) == {*REFUSED, *(str(r) for r in Role)}
    for who, headers in callers.items():
        campaign_id = _campaign_in(state, engine, settings, clock) if state else None
        before = (_audit(engine), _count_campaigns(engine))
        before_status = _status(engine, campaign_id) if campaign_id else None
        response = client.request(
            method,
            BASE + path.format(id=campaign_id),
            headers=headers,
            json=SPEC if endpoint == "create" else None,
        )
        body = response.json()
        case = f"{endpoint} as {who}: {response.status_code} {body}"
        if who in REFUSED:
            assert response.status_code == 401, case
            assert response.headers["WWW-Authenticate"] == "Bearer", case
            assert body["error"]["code"] == "unauthenticated", case
        elif Role(who) not in allowed:
            assert response.status_code == 403, case
            assert body["error"]["code"] == "forbidden", case
            assert f"has the role {who}" in body["error"]["message"], case
        else:
            assert response.status_code == (201 if endpoint == "create" else 200), case
            if method == "POST":
                # The change is the caller's, under its key.
                action, _, actor = _audit(engine)[-1]
                assert (action, actor) == (
                    f"campaign.{endpoint}",
                    f"key:{keys.prefix(Role(who))}",
                ), case
            continue
        assert (_audit(engine), _count_campaigns(engine)) == before, case
        if campaign_id:
            assert _status(engine, campaign_id) == before_status, case


def test_health_needs_no_key(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["database"]["status"] == "ok"


def test_the_key_may_come_in_x_api_key(client: TestClient, keys: Keys) -> None:
    assert client.get(BASE, headers={"X-API-Key": keys.by_role[Role.OPERATOR]}).status_code == 200
    refused = client.get(BASE, headers={"X-API-Key": keys.revoked})
    assert refused.status_code == 401
    assert "was revoked" in refused.json()["error"]["message"]


def test_refusals_say_only_unknown_revoked_or_expired(client: TestClient, keys: Keys) -> None:
    messages = {
        name: client.get(BASE, headers=bearer(key)).json()["error"]["message"]
        for name, key in {
            "unknown": "loa_0badc0de_" + "y" * 43,
            "wrong secret": keys.wrong_secret,
            "not a loa key": "abc",
            "revoked": keys.revoked,
            "expired": keys.expired,
        }.items()
    }
    # A wrong secret of a real key reads exactly as an unknown key: nothing says the prefix exists.
    assert messages["unknown"] == messages["wrong secret"] == messages["not a loa key"]
    assert messages["unknown"] == "unknown API key"
    assert "revoked" in messages["revoked"]
    assert "expired" in messages["expired"]


# --- the lifecycle over HTTP ------------------------------------------------------------------


def test_full_lifecycle_over_http_is_audited_under_the_keys(
    client: TestClient, keys: Keys, engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    planner, approver, admin = (
        bearer(keys.by_role[r]) for r in (Role.PLANNER, Role.APPROVER, Role.ADMIN)
    )
    created = client.post(BASE, headers=planner, json=SPEC)
    assert created.status_code == 201, created.json()
    campaign = created.json()
    campaign_id = campaign["id"]
    assert (campaign["status"], campaign["created_by"]) == (
        "draft",
        f"key:{keys.prefix(Role.PLANNER)}",
    )

    approved = client.post(f"{BASE}/{campaign_id}/approve", headers=approver).json()
    assert (approved["status"], approved["approved_by"]) == (
        "approved",
        f"key:{keys.prefix(Role.APPROVER)}",
    )
    launched = client.post(f"{BASE}/{campaign_id}/launch", headers=approver).json()
    assert launched["status"] == "scheduled"
    assert launched["launched_at"] == clock().isoformat().replace("+00:00", "Z")

    clock.now = FIRST_FIRE
    run_tick(engine, now=clock(), settings=settings)  # the first wave fires: 4 messages planned
    assert client.get(f"{BASE}/{campaign_id}", headers=approver).json()["status"] == "running"

    assert client.post(f"{BASE}/{campaign_id}/pause", headers=approver).json()["status"] == "paused"
    assert client.post(f"{BASE}/{campaign_id}/resume", headers=admin).json()["status"] == "running"
    cancelled = client.post(f"{BASE}/{campaign_id}/cancel", headers=approver)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    # The four planned messages of the fired wave, and the wave that had not fired.
    assert (cancelled.json()["messages_cancelled"], cancelled.json()["waves_closed"]) == (4, 1)

    stats = client.get(f"{BASE}/{campaign_id}/stats", headers=bearer(keys.by_role[Role.OPERATOR]))
    assert stats.json()["by_status"][MessageStatus.CANCELLED] == len(PHONES)
    with session_scope(engine) as session:
        waves = session.scalars(select(col(Wave.status)).order_by(col(Wave.position))).all()
        assert waves == [WaveStatus.EXPANDED, WaveStatus.DONE]  # the fired one closes at a tick
        assert set(session.scalars(select(col(OutboxMessage.status)))) == {MessageStatus.CANCELLED}

    key = {role: f"key:{keys.prefix(role)}" for role in Role}
    assert [
        (action, who) for action, entity_id, who in _audit(engine) if entity_id == str(campaign_id)
    ] == [
        ("campaign.create", key[Role.PLANNER]),
        ("campaign.approve", key[Role.APPROVER]),
        ("campaign.launch", key[Role.APPROVER]),
        ("campaign.run", "scheduler"),
        ("campaign.pause", key[Role.APPROVER]),
        ("campaign.resume", key[Role.ADMIN]),
        ("campaign.cancel", key[Role.APPROVER]),
    ]


def test_four_eyes_needs_another_key(
    keys: Keys, engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    four_eyes = settings.model_copy(update={"four_eyes_approval": True})
    admin, approver = bearer(keys.by_role[Role.ADMIN]), bearer(keys.by_role[Role.APPROVER])
    with _app_client(four_eyes, engine, clock) as client:
        campaign_id = client.post(BASE, headers=admin, json=SPEC).json()["id"]
        audit_before = _audit(engine)

        own = client.post(f"{BASE}/{campaign_id}/approve", headers=admin)
        assert own.status_code == 409
        error = own.json()["error"]
        assert error["code"] == "conflict"
        assert f"created by key:{keys.prefix(Role.ADMIN)}" in error["message"]
        assert "four-eyes approval is on" in error["message"]
        assert "someone other than its author must approve it" in error["message"]
        assert _status(engine, campaign_id) == "draft"
        assert _audit(engine) == audit_before

        other = client.post(f"{BASE}/{campaign_id}/approve", headers=approver)
        assert other.status_code == 200
        assert other.json()["approved_by"] == f"key:{keys.prefix(Role.APPROVER)}"


@pytest.mark.parametrize(
    ("verb", "state", "says"),
    [
        ("launch", "draft", "launch needs it to be approved (run: loa campaign approve"),
        ("resume", "scheduled", "it is not paused, so there is nothing to resume"),
        ("pause", "draft", "it has not been launched"),
        ("approve", "approved", "approve needs it to be draft"),
        ("approve", "cancelled", "which is final"),
    ],
)
def test_illegal_transition_is_409_and_changes_nothing(
    verb: str,
    state: str,
    says: str,
    client: TestClient,
    keys: Keys,
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
) -> None:
    campaign_id = _campaign_in(state, engine, settings, clock)
    admin = bearer(keys.by_role[Role.ADMIN])
    before = (_status(engine, campaign_id), _audit(engine))
    response = client.post(f"{BASE}/{campaign_id}/{verb}", headers=admin)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert says in response.json()["error"]["message"]
    assert (_status(engine, campaign_id), _audit(engine)) == before


def test_unknown_campaign_is_404(client: TestClient, keys: Keys) -> None:
    response = client.post(f"{BASE}/999/approve", headers=bearer(keys.by_role[Role.ADMIN]))
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "no campaign with id 999", "field": None}
    }


# --- bad requests: one error shape, never a 5xx ------------------------------------------------


def test_a_bad_spec_is_422_naming_wave_and_field(
    client: TestClient, keys: Keys, engine: Engine
) -> None:
    planner = bearer(keys.by_role[Role.PLANNER])
    typo = copy.deepcopy(SPEC)
    typo["waves"][1]["klass"] = "qc"
    response = client.post(BASE, headers=planner, json=typo)
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "invalid_spec",
        "message": "request body: wave 2 ('Nhắc lại'), field klass: Extra inputs are not permitted",
        "field": "waves.1.klass",
    }

    unknown_area = copy.deepcopy(SPEC)
    unknown_area["waves"][0]["audience"]["areas"] = ["99"]
    response = client.post(BASE, headers=planner, json=unknown_area)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "audience.areas"
    assert (
        "wave 1 ('Lễ ra quân'), field audience.areas: unknown area code(s) 99"
        in (response.json()["error"]["message"])
    )

    # Without a key, the spec is not even looked at.
    assert client.post(BASE, json=typo).status_code == 401
    assert _count_campaigns(engine) == 0


@pytest.mark.parametrize(
    ("content", "content_type", "says"),
    [
        (b'{"name": "C", "waves": [', "application/json", "the request body is not valid JSON"),
        (b"", "application/json", "the request has no body"),
        (b"name: C\nwaves: []\n", "text/plain", "send the spec as JSON"),
        (b"[1, 2]", "application/json", "a campaign spec must be a mapping"),
        (b'{"name": 5, "waves": "x"}', "application/json", "field name: Input should be a valid"),
    ],
    ids=["malformed", "empty", "yaml", "a list", "wrong types"],
)
def test_a_body_that_is_not_a_spec_is_a_clear_4xx(
    content: bytes, content_type: str, says: str, client: TestClient, keys: Keys, engine: Engine
) -> None:
    response = client.post(
        BASE,
        headers={**bearer(keys.by_role[Role.PLANNER]), "Content-Type": content_type},
        content=content,
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] in ("invalid", "invalid_spec")
    assert says in error["message"]
    assert _count_campaigns(engine) == 0


def test_fastapi_validation_errors_use_the_error_shape(client: TestClient, keys: Keys) -> None:
    response = client.get(f"{BASE}/abc", headers=bearer(keys.by_role[Role.ADMIN]))
    assert response.status_code == 422
    assert response.json() == {
        "error": {
            "code": "invalid",
            "message": "path campaign_id: Input should be a valid integer, unable to parse "
            "string as an integer",
            "field": "campaign_id",
        }
    }
    missing = client.get("/api/v1/nothing-here")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
