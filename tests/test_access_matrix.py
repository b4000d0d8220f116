"""The access matrix: every route of the real app x every caller, on SQLite and PostgreSQL.

The routes come from the app itself, so a new endpoint without a row in MATRIX fails this test
with its method and path. The callers: a key of each role (a district key for the area in the
path, and one for another area), no key, an expired key and a revoked key (both admin keys, so
that the expiry or revocation is the only reason to refuse them). For each:
- a role in the row: 2xx; a row marked `audited` (the call changes state) leaves an audit entry
  under the caller's key, and any other row leaves none;
- a role outside it: 403; no valid key: 401; and a refused call writes no audit entry.
Public routes answer every caller; signed webhooks ignore API keys: unsigned, every caller is
refused; signed, every caller is accepted.

Who may do what. From the issue: planners create and edit campaigns, segments and templates
(templates are part of a campaign's spec: api/routes/waves.py); approvers approve, launch,
pause, resume and cancel; operators read statistics and delivery logs; district keys read their
own area's playlists and audio and report its plays; admins do everything. The reads the issue
leaves open are decided here:

| resource                                 | admin | planner | approver | operator | district   |
|------------------------------------------|-------|---------|----------|----------|------------|
| campaigns, waves, stats, plan, preview   | read  | read    | read     | read     | -          |
| campaign create, edit; test-send         | yes   | yes     | -        | -        | -          |
| approve, launch, pause, resume, cancel   | yes   | -       | yes      | -        | -          |
| segments, suppressions, consents: read   | yes   | yes     | yes      | yes      | -          |
| segments, suppressions, consents: write  | yes   | yes     | -        | -        | -          |
| recipients: search, read                 | whole | whole   | masked   | masked   | -          |
| recipients: import                       | yes   | yes     | -        | -        | -          |
| audio: add                               | yes   | yes     | -        | -        | -          |
| audio: list                              | all   | all     | all      | all      | own area's |
| audio: file, record                      | yes   | yes     | yes      | yes      | own area's |
| playlists, play counts, plays, plays.csv | yes   | yes     | yes      | yes      | own area   |
| plays: report                            | yes   | -       | -        | -        | own area   |
| stats, stats.csv                         | yes   | yes     | yes      | yes      | own area   |
| deliveries, deliveries.csv               | yes   | yes     | yes      | yes      | -          |
| audit log; API keys                      | yes   | -       | -        | -        | -          |
| /health, /metrics, /docs, /redoc, /openapi.json | public: no key needed, a bad key is ignored |
| /webhooks/...                            | signed by the provider; keys grant nothing     |
| /, /login, /logout (the operator page)   | keys in headers grant nothing (its own cookie) |

("whole"/"masked": the phone numbers of recipients; see api/routes/recipients.py. The operator
page's sign-in and what each role sees there: tests/test_operator_page.py.)
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import math
import struct
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, func, select
from sqlmodel import col
from twilio.request_validator import RequestValidator

from api.app import create_app
from audience.consent import add_consent
from audience.segments import create_segment
from audience.suppression import add_suppression
from audio.store import asset_path
from loa.apikeys import create_key, revoke_key
from loa.db import session_scope
from loa.models import AuditEntry, BroadcastItem, Wave
from loa.settings import Settings
from scheduler.lifecycle import (
    approve_campaign,
    create_campaign,
    launch_campaign,
    pause_campaign,
)
from scheduler.spec import validate_spec
from tests.broadcasting import add_audio, launch_broadcast, loudspeaker_wave
from tests.builders import add_areas, add_recipient
from tests.conftest import FakeClock
from tests.gateway_stub import GATEWAY_ENV, REPORT_SECRET, gateway_entry, write_gateways

ADMIN, PLANNER, APPROVER, OPERATOR = "admin", "planner", "approver", "operator"
OWN, OTHER = "district-own", "district-other"  # district keys for area 440, and for area 40
ROLES = (ADMIN, PLANNER, APPROVER, OPERATOR, OWN, OTHER)
NO_KEY, EXPIRED, REVOKED = "no key", "expired key", "revoked key"
CALLERS = (*ROLES, NO_KEY, EXPIRED, REVOKED)

PROVINCE = frozenset({ADMIN, PLANNER, APPROVER, OPERATOR})
PLANNERS = frozenset({ADMIN, PLANNER})
APPROVERS = frozenset({ADMIN, APPROVER})
ADMINS = frozenset({ADMIN})
AREA = PROVINCE | {OWN}  # the province's roles, and the district key of the area in the path
REPORTERS = frozenset({ADMIN, OWN})
ANY_KEY = frozenset(ROLES)
PUBLIC = "public"
SIGNED = "signed"
PAGE = "page"

TWILIO_TOKEN = "matrix-token"
PUBLIC_URL = "https://loa.example.vn"
SPEC: dict[str, Any] = {
    "name": "Tháng vận động BHXH 2026",
    "timezone": "Asia/Ho_Chi_Minh",
    "waves": [
        {
            "name": "Lễ ra quân",
            "channel": "sms",
            "class": "info",
            "at": "2026-05-08 07:30",  # 00:30 UTC; the clock stands at 00:00 UTC
            "audience": {"areas": ["42"]},
            "template": "BHXH: {{ name }} oi, thang 5 la Thang van dong BHXH toan dan.",
        }
    ],
}


@dataclass
class Call:
    url: str
    json: Any = None
    content: bytes | None = None
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    signature: dict[str, str] = field(default_factory=dict)  # a webhook's; dropped to refuse


@dataclass
class World:
    """The data the calls need; each call that changes state gets fresh objects of its own, so
    that every caller in the role meets a state in which the call succeeds."""

    engine: Engine
    settings: Settings
    clock: FakeClock
    campaign: int = 0  # a draft, for the reads
    wave: int = 0
    recipient: int = 0
    sha: str = ""  # audio in area 440's playlists, with its file
    item: int = 0  # a broadcast item in area 440's communes
    made: int = 0

    def fresh(self) -> int:
        self.made += 1
        return self.made

    def phone(self) -> str:
        return f"0912{self.fresh():06d}"

    def campaign_in(self, state: str) -> int:
        settings, now = self.settings, self.clock()
        with session_scope(self.engine) as session:
            campaign = create_campaign(
                session,
                spec=validate_spec(SPEC, source="test"),
                actor="test",
                now=now,
                settings=settings,
            )
            assert campaign.id is not None
            if state in ("approved", "scheduled", "paused"):
                approve_campaign(session, campaign.id, actor="other", now=now, settings=settings)
            if state in ("scheduled", "paused"):
                launch_campaign(session, campaign.id, actor="other", now=now, settings=settings)
            if state == "paused":
                pause_campaign(session, campaign.id, actor="other", now=now)
            return campaign.id

    def segment(self) -> str:
        name = f"segment-{self.fresh()}"
        with session_scope(self.engine) as session:
            create_segment(
                session,
                name=name,
                raw_filter={"areas": ["440"]},
                description=None,
                actor="test",
                now=self.clock(),
                source="test",
            )
        return name

    def suppressed(self) -> str:
        with session_scope(self.engine) as session:
            phone = add_suppression(
                session, self.phone(), reason="manual", note=None, actor="t", now=self.clock()
            ).phone
        return phone

    def consented(self) -> str:
        with session_scope(self.engine) as session:
            phone = add_consent(
                session, self.phone(), note=None, given_at=None, actor="t", now=self.clock()
            ).phone
        return phone

    def key_prefix(self) -> str:
        with session_scope(self.engine) as session:
            key = create_key(session, role="operator", actor="t", now=self.clock())
        return key.api_key.prefix

    def plays(self) -> list[dict[str, Any]]:
        start = self.clock() - timedelta(minutes=self.fresh())
        return [
            {
                "item": self.item,
                "commune": "18301",
                "started_at": start.isoformat(),
                "ended_at": (start + timedelta(seconds=30)).isoformat(),
                "result": "played",
            }
        ]

    def wav(self) -> bytes:
        """Two seconds of a tone of its own pitch: new audio for every upload."""
        rate, pitch = 16_000, 300 + 7 * self.fresh()
        frames = b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * pitch * n / rate)))
            for n in range(2 * rate)
        )
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(frames)
        return buffer.getvalue()


def _twilio(path: str, params: dict[str, str]) -> Call:
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC_URL + path, params)
    return Call(
        path,
        content=urlencode(params).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        signature={"X-Twilio-Signature": signature},
    )


def _gateway_report() -> Call:
    body = json.dumps({"reports": [{"requestId": "loa-999999", "status": "DELIVRD"}]}).encode()
    digest = hmac.new(REPORT_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return Call(
        "/webhooks/gateway/vn/status",
        content=body,
        headers={"Content-Type": "application/json"},
        signature={"X-Signature": digest},
    )


@dataclass(frozen=True)
class Row:
    allowed: frozenset[str] | str  # the roles, or PUBLIC, or SIGNED, or PAGE
    call: Callable[[World], Call]
    audited: bool = False  # a successful call changes state, under the caller's key
    page_status: int = 200  # PAGE: what every caller gets (redirects followed)


def _public(path: str) -> Callable[[World], Call]:
    return lambda _world: Call(path)


C = "/api/v1/campaigns"
DAY = {"date": "2026-05-09"}
MATRIX: dict[tuple[str, str], Row] = {
    # Public: no key needed, and a refused key is ignored rather than held against the caller.
    **{
        (method, path): Row(PUBLIC, _public(path))
        for path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
        for method in ("GET", "HEAD")
    },
    ("GET", "/health"): Row(PUBLIC, lambda w: Call("/health")),
    # API keys grant nothing here: with LOA_METRICS_TOKEN set it takes that token instead
    # (tests/test_ops.py); unset, as here, it is open.
    ("GET", "/metrics"): Row(PUBLIC, _public("/metrics")),
    # Signed by the provider.
    ("POST", "/webhooks/twilio/status"): Row(
        SIGNED,
        lambda w: _twilio(
            "/webhooks/twilio/status",
            {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"},
        ),
    ),
    ("POST", "/webhooks/twilio/inbound"): Row(
        SIGNED,
        lambda w: _twilio("/webhooks/twilio/inbound", {"From": "+84912000001", "Body": "Xin chao"}),
    ),
    ("POST", "/webhooks/gateway/{name}/status"): Row(SIGNED, lambda w: _gateway_report()),
    # The operator page: without its cookie, to the sign-in form; a form without its token is
    # refused whatever key comes in a header.
    ("GET", "/"): Row(PAGE, _public("/")),
    ("GET", "/login"): Row(PAGE, _public("/login")),
    ("POST", "/login"): Row(PAGE, _public("/login"), page_status=403),
    ("POST", "/logout"): Row(PAGE, _public("/logout"), page_status=403),
    # Campaigns and their waves.
    ("GET", C): Row(PROVINCE, lambda w: Call(C)),
    ("POST", C): Row(PLANNERS, lambda w: Call(C, json=SPEC), audited=True),
    ("GET", C + "/{campaign_id}"): Row(PROVINCE, lambda w: Call(f"{C}/{w.campaign}")),
    ("PUT", C + "/{campaign_id}"): Row(
        PLANNERS, lambda w: Call(f"{C}/{w.campaign_in('draft')}", json=SPEC), audited=True
    ),
    ("GET", C + "/{campaign_id}/stats"): Row(PROVINCE, lambda w: Call(f"{C}/{w.campaign}/stats")),
    ("POST", C + "/{campaign_id}/plan"): Row(PROVINCE, lambda w: Call(f"{C}/{w.campaign}/plan")),
    ("POST", C + "/{campaign_id}/approve"): Row(
        APPROVERS, lambda w: Call(f"{C}/{w.campaign_in('draft')}/approve"), audited=True
    ),
    ("POST", C + "/{campaign_id}/launch"): Row(
        APPROVERS, lambda w: Call(f"{C}/{w.campaign_in('approved')}/launch"), audited=True
    ),
    ("POST", C + "/{campaign_id}/pause"): Row(
        APPROVERS, lambda w: Call(f"{C}/{w.campaign_in('scheduled')}/pause"), audited=True
    ),
    ("POST", C + "/{campaign_id}/resume"): Row(
        APPROVERS, lambda w: Call(f"{C}/{w.campaign_in('paused')}/resume"), audited=True
    ),
    ("POST", C + "/{campaign_id}/cancel"): Row(
        APPROVERS, lambda w: Call(f"{C}/{w.campaign_in('draft')}/cancel"), audited=True
    ),
    ("GET", C + "/{campaign_id}/waves"): Row(PROVINCE, lambda w: Call(f"{C}/{w.campaign}/waves")),
    ("POST", C + "/{campaign_id}/waves/{wave_id}/preview"): Row(
        PROVINCE, lambda w: Call(f"{C}/{w.campaign}/waves/{w.wave}/preview")
    ),
    ("POST", C + "/{campaign_id}/waves/{wave_id}/test-send"): Row(
        PLANNERS,
        lambda w: Call(f"{C}/{w.campaign}/waves/{w.wave}/test-send", json={"to": ["0912345678"]}),
        audited=True,
    ),
    # Segments.
    ("GET", "/api/v1/segments"): Row(PROVINCE, lambda w: Call("/api/v1/segments")),
    ("POST", "/api/v1/segments"): Row(
        PLANNERS,
        lambda w: Call(
            "/api/v1/segments", json={"name": f"s-{w.fresh()}", "filter": {"areas": ["440"]}}
        ),
        audited=True,
    ),
    ("POST", "/api/v1/segments/count"): Row(
        PROVINCE, lambda w: Call("/api/v1/segments/count", json={"filter": {"tags": ["x"]}})
    ),
    ("GET", "/api/v1/segments/{name}"): Row(
        PROVINCE, lambda w: Call(f"/api/v1/segments/{w.segment()}")
    ),
    ("PUT", "/api/v1/segments/{name}"): Row(
        PLANNERS,
        lambda w: Call(f"/api/v1/segments/{w.segment()}", json={"filter": {"areas": ["42"]}}),
        audited=True,
    ),
    ("DELETE", "/api/v1/segments/{name}"): Row(
        PLANNERS, lambda w: Call(f"/api/v1/segments/{w.segment()}"), audited=True
    ),
    ("GET", "/api/v1/segments/{name}/count"): Row(
        PROVINCE, lambda w: Call(f"/api/v1/segments/{w.segment()}/count")
    ),
    # The suppression list and consents.
    ("GET", "/api/v1/suppressions"): Row(PROVINCE, lambda w: Call("/api/v1/suppressions")),
    ("POST", "/api/v1/suppressions"): Row(
        PLANNERS, lambda w: Call("/api/v1/suppressions", json={"phone": w.phone()}), audited=True
    ),
    ("POST", "/api/v1/suppressions/import"): Row(
        PLANNERS,
        lambda w: Call(
            "/api/v1/suppressions/import",
            content=f"phone\n{w.phone()}\n".encode(),
            headers={"Content-Type": "text/csv"},
        ),
        audited=True,
    ),
    ("DELETE", "/api/v1/suppressions/{phone}"): Row(
        PLANNERS, lambda w: Call(f"/api/v1/suppressions/{w.suppressed()}"), audited=True
    ),
    ("GET", "/api/v1/consents"): Row(PROVINCE, lambda w: Call("/api/v1/consents")),
    ("POST", "/api/v1/consents"): Row(
        PLANNERS, lambda w: Call("/api/v1/consents", json={"phone": w.phone()}), audited=True
    ),
    ("POST", "/api/v1/consents/import"): Row(
        PLANNERS,
        lambda w: Call(
            "/api/v1/consents/import",
            content=f"phone\n{w.phone()}\n".encode(),
            headers={"Content-Type": "text/csv"},
        ),
        audited=True,
    ),
    ("DELETE", "/api/v1/consents/{phone}"): Row(
        PLANNERS, lambda w: Call(f"/api/v1/consents/{w.consented()}"), audited=True
    ),
    # Recipients.
    ("GET", "/api/v1/recipients"): Row(
        PROVINCE, lambda w: Call("/api/v1/recipients", params={"area": "440"})
    ),
    ("GET", "/api/v1/recipients/{recipient_id}"): Row(
        PROVINCE, lambda w: Call(f"/api/v1/recipients/{w.recipient}")
    ),
    ("POST", "/api/v1/recipients/import"): Row(
        PLANNERS,
        lambda w: Call(
            "/api/v1/recipients/import",
            content=f"phone,name,area\n{w.phone()},Lê Văn Hòa,18301\n".encode(),
            headers={"Content-Type": "text/csv"},
        ),
        audited=True,
    ),
    # Audio.
    ("POST", "/api/v1/audio"): Row(
        PLANNERS,
        lambda w: Call(
            "/api/v1/audio",
            content=w.wav(),
            params={"filename": "ban-tin.wav"},
            headers={"Content-Type": "audio/wav"},
        ),
        audited=True,
    ),
    ("GET", "/api/v1/audio"): Row(ANY_KEY, lambda w: Call("/api/v1/audio")),
    ("GET", "/api/v1/audio/{sha256}"): Row(AREA, lambda w: Call(f"/api/v1/audio/{w.sha}")),
    ("GET", "/api/v1/audio/{sha256}.mp3"): Row(AREA, lambda w: Call(f"/api/v1/audio/{w.sha}.mp3")),
    ("HEAD", "/api/v1/audio/{sha256}.mp3"): Row(AREA, lambda w: Call(f"/api/v1/audio/{w.sha}.mp3")),
    # Playlists and plays (area 440: the own district key's).
    ("GET", "/api/v1/districts/{code}/playlist"): Row(
        AREA, lambda w: Call("/api/v1/districts/440/playlist", params=DAY)
    ),
    ("GET", "/api/v1/districts/{code}/playlist.m3u8"): Row(
        AREA, lambda w: Call("/api/v1/districts/440/playlist.m3u8", params=DAY)
    ),
    ("GET", "/api/v1/districts/{code}/playlist.xspf"): Row(
        AREA, lambda w: Call("/api/v1/districts/440/playlist.xspf", params=DAY)
    ),
    ("POST", "/api/v1/districts/{code}/plays"): Row(
        REPORTERS, lambda w: Call("/api/v1/districts/440/plays", json=w.plays()), audited=True
    ),
    ("GET", "/api/v1/districts/{code}/plays"): Row(
        AREA, lambda w: Call("/api/v1/districts/440/plays")
    ),
    ("GET", "/api/v1/plays"): Row(
        AREA, lambda w: Call("/api/v1/plays", params={"district": "440"})
    ),
    ("GET", "/api/v1/plays.csv"): Row(
        AREA, lambda w: Call("/api/v1/plays.csv", params={"district": "440"})
    ),
    # The delivery log.
    # Statistics of area 440: the own district key's (its other-area key is refused).
    ("GET", "/api/v1/stats"): Row(
        AREA, lambda w: Call("/api/v1/stats", params={"area_code": "440", "group_by": "district"})
    ),
    ("GET", "/api/v1/stats.csv"): Row(
        AREA,
        lambda w: Call("/api/v1/stats.csv", params={"area_code": "440", "group_by": "commune"}),
    ),
    ("GET", "/api/v1/deliveries"): Row(PROVINCE, lambda w: Call("/api/v1/deliveries")),
    ("GET", "/api/v1/deliveries.csv"): Row(PROVINCE, lambda w: Call("/api/v1/deliveries.csv")),
    # Administration.
    ("GET", "/api/v1/audit"): Row(ADMINS, lambda w: Call("/api/v1/audit")),
    ("GET", "/api/v1/apikeys"): Row(ADMINS, lambda w: Call("/api/v1/apikeys")),
    ("POST", "/api/v1/apikeys"): Row(
        ADMINS, lambda w: Call("/api/v1/apikeys", json={"role": "operator"}), audited=True
    ),
    ("POST", "/api/v1/apikeys/{prefix}/revoke"): Row(
        ADMINS, lambda w: Call(f"/api/v1/apikeys/{w.key_prefix()}/revoke"), audited=True
    ),
}


# POSTs that change nothing: they compute an answer from the data as it is. Every other POST,
# PUT and DELETE behind a key must be `audited`. (The webhooks' effects are recorded by what they
# touch: delivery events for reports, an audit entry by the channel for an opt-out.)
WRITES_NOTHING = {
    ("POST", C + "/{campaign_id}/plan"),
    ("POST", C + "/{campaign_id}/waves/{wave_id}/preview"),
    ("POST", "/api/v1/segments/count"),
}


def app_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves."""
    return {
        (method, context.path or "")
        for context in iter_route_contexts(app.routes)
        for method in context.methods or ()
    }


@pytest.fixture
def matrix_settings(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    for name, value in GATEWAY_ENV.items():
        monkeypatch.setenv(name, value)
    # Reports only: nothing is sent through this gateway here.
    gateways = write_gateways(tmp_path / "gw.yaml", {"vn": gateway_entry("http://127.0.0.1:9")})
    return settings.model_copy(
        update={
            "twilio_auth_token": SecretStr(TWILIO_TOKEN),
            "public_url": PUBLIC_URL,
            "gateways_file": gateways,
        }
    )


@pytest.fixture
def world(engine: Engine, matrix_settings: Settings, clock: FakeClock) -> World:
    world = World(engine, matrix_settings, clock)
    with session_scope(engine) as session:
        add_areas(session)
        recipient = add_recipient(session, "+84912999001", now=clock(), area="18301")
        assert recipient.id is not None
        world.recipient = recipient.id
        world.sha = add_audio(session, "bhxh", duration_ms=60_000, now=clock())
    path = asset_path(matrix_settings.data_dir, world.sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"ID3" + bytes(1000))  # served as stored; never decoded here
    launch_broadcast(engine, matrix_settings, clock(), loudspeaker_wave(world.sha))
    world.campaign = world.campaign_in("draft")
    with session_scope(engine) as session:
        wave = session.scalars(select(Wave).where(col(Wave.campaign_id) == world.campaign)).one()
        item = session.scalars(select(BroadcastItem).limit(1)).one()
    assert wave.id is not None and item.id is not None
    world.wave, world.item = wave.id, item.id
    return world


@pytest.fixture
def callers(engine: Engine, clock: FakeClock, world: World) -> dict[str, dict[str, str]]:
    """Request headers of each caller."""
    now = clock()
    with session_scope(engine) as session:

        def key(role: str, area: str | None = None, **kw: Any) -> str:
            return create_key(session, role=role, actor="t", now=now, area_code=area, **kw).key

        keys = {
            ADMIN: key("admin"),
            PLANNER: key("planner"),
            APPROVER: key("approver"),
            OPERATOR: key("operator"),
            OWN: key("district", "440"),
            OTHER: key("district", "40"),
            REVOKED: key("admin"),
        }
        revoke_key(session, keys[REVOKED].split("_")[1], actor="t", now=now)
        keys[EXPIRED] = create_key(
            session,
            role="admin",
            actor="t",
            now=now - timedelta(days=2),
            expires_in=timedelta(days=1),
        ).key
    return {
        NO_KEY: {},
        **{who: {"Authorization": f"Bearer {value}"} for who, value in keys.items()},
    }


@pytest.fixture
def client(matrix_settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(matrix_settings, engine, clock=clock)) as test_client:
        yield test_client


def _audit_count(engine: Engine, actor: str | None = None) -> int:
    statement = select(func.count()).select_from(AuditEntry)
    if actor is not None:
        statement = statement.where(col(AuditEntry.actor) == actor)
    with session_scope(engine) as session:
        return int(session.scalar(statement) or 0)


def test_every_route_has_a_row_and_every_change_is_audited(client: TestClient) -> None:
    served = app_routes(client.app)
    missing = sorted(served - set(MATRIX))
    assert not missing, f"routes without a row in the access matrix: {missing}"
    stale = sorted(set(MATRIX) - served)
    assert not stale, f"rows for routes the app does not serve: {stale}"
    unaudited = sorted(
        key
        for key, row in MATRIX.items()
        if key[0] in ("POST", "PUT", "PATCH", "DELETE")
        and row.allowed not in (PUBLIC, SIGNED, PAGE)
        and not row.audited
        and key not in WRITES_NOTHING
    )
    assert not unaudited, f"state-changing routes not marked audited: {unaudited}"


def test_every_route_for_every_caller(
    client: TestClient, world: World, callers: dict[str, dict[str, str]], engine: Engine
) -> None:
    assert set(callers) == set(CALLERS)
    failures: list[str] = []
    for (method, path), row in sorted(MATRIX.items()):
        for who in CALLERS:
            failures += _check(client, world, engine, method, path, row, who, callers[who])
    assert not failures, f"{len(failures)} cases differ:\n" + "\n".join(failures)


def _check(
    client: TestClient,
    world: World,
    engine: Engine,
    method: str,
    path: str,
    row: Row,
    who: str,
    headers: dict[str, str],
) -> list[str]:
    """The call as `who`, against the row: the differences, as lines."""
    call = row.call(world)
    actor = f"key:{headers['Authorization'].split('_')[1]}" if headers else None
    before, before_mine = _audit_count(engine), _audit_count(engine, actor) if actor else 0
    signed = {**call.headers, **call.signature}
    # A webhook twice: without its signature (refused whatever the key), then with it.
    attempts = [("", signed)]
    if row.allowed == SIGNED:
        attempts = [("unsigned", call.headers), ("signed", signed)]
    problems: list[str] = []
    for how, extra in attempts:
        response = client.request(
            method,
            call.url,
            params=call.params,
            json=call.json,
            content=call.content,
            headers={**headers, **extra},
        )
        status = response.status_code
        case = f"{method} {path} as {who}{' ' + how if how else ''}: {status}"
        if row.allowed == PAGE:
            expected = str(row.page_status)
            if status != row.page_status:
                problems.append(f"{case}, expected {expected}: {response.text[:200]}")
            elif _audit_count(engine) != before:
                problems.append(f"{case}: the page wrote to the audit log")
            continue
        if row.allowed == PUBLIC or how == "signed":
            expected = "2xx"
        elif how == "unsigned":
            expected = "403"
        elif who in (NO_KEY, EXPIRED, REVOKED):
            expected = "401"
        elif who in row.allowed:
            expected = "2xx"
        else:
            expected = "403"
        ok = 200 <= status < 300 if expected == "2xx" else str(status) == expected
        if not ok:
            problems.append(f"{case}, expected {expected}: {response.text[:200]}")
            continue
        if expected in ("401", "403"):
            code = response.json()["error"]["code"] if method != "HEAD" else None
            wanted = "unauthenticated" if expected == "401" else "forbidden"
            if code != wanted and method != "HEAD":
                problems.append(f"{case}: error code {code}, expected {wanted}")
            if _audit_count(engine) != before:
                problems.append(f"{case}: a refused call wrote to the audit log")
        elif row.allowed not in (PUBLIC, SIGNED):
            wrote = _audit_count(engine, actor) - before_mine
            if row.audited and wrote < 1:
                problems.append(f"{case}: changed state without an audit entry under {actor}")
            if not row.audited and wrote:
                problems.append(f"{case}: wrote {wrote} audit entries; mark the row audited")
    return problems
