"""Bad input across the API, on SQLite and PostgreSQL: malformed JSON, wrong types, unknown
fields, bodies over the limit, SQL-looking strings, page sizes out of range, refused keys, and an
error nobody expected. Each is an answer in the error shape (a code, a message, the field), never
a 5xx for the client's mistake, never a traceback; nothing is half-written."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlmodel import SQLModel, col

import api.routes.segments
from api.app import create_app
from loa.apikeys import Role, create_key, revoke_key
from loa.db import session_scope
from loa.models import Campaign, Suppression
from loa.settings import Settings
from tests.builders import add_areas, add_recipient, launch
from tests.conftest import FakeClock

LIMIT = 2048  # LOA_API_MAX_BODY_BYTES in these tests
SPEC: dict[str, Any] = {
    "name": "C",
    "waves": [
        {
            "name": "W",
            "channel": "sms",
            "at": "2026-05-09 07:30",
            "audience": {"areas": ["42"]},
            "template": "BHXH: {{ name }} oi.",
        }
    ],
}
PLAY = {
    "item": 1,
    "commune": "18301",
    "started_at": "2026-05-08T06:00:00+07:00",
    "ended_at": "2026-05-08T06:05:00+07:00",
    "result": "played",
}


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    with session_scope(engine) as session:
        add_areas(session)
        add_recipient(session, "+84912000001", now=clock(), tags=("nong-dan",))
    limited = settings.model_copy(update={"api_max_body_bytes": LIMIT})
    with TestClient(create_app(limited, engine, clock=clock)) as test_client:
        yield test_client


@pytest.fixture
def admin(engine: Engine, clock: FakeClock) -> dict[str, str]:
    with session_scope(engine) as session:
        key = create_key(session, role=Role.ADMIN, actor="t", now=clock()).key
    return {"Authorization": f"Bearer {key}"}


def _rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in SQLModel.metadata.tables.items()
            # The API process's own heartbeat, written whatever the requests do.
            if name != "worker"
        }


def _error(response: Any, status: int) -> dict[str, Any]:
    """The error of an answer that must be `status` in the API's error shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text
    body: dict[str, dict[str, Any]] = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    return body["error"]


def test_malformed_json_and_wrong_types_are_422s_naming_the_field(
    client: TestClient,
    admin: dict[str, str],
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
) -> None:
    before = _rows(engine)
    json_headers = {**admin, "Content-Type": "application/json"}
    for path, raw in [
        ("/api/v1/campaigns", b'{"name": '),
        ("/api/v1/segments", b"{'name': 'single quotes'}"),
        ("/api/v1/suppressions", b'{"phone": "0912000002",}'),
        ("/api/v1/districts/440/plays", b"[{]"),
    ]:
        error = _error(client.post(path, content=raw, headers=json_headers), 422)
        assert error["code"] == "invalid"
        assert error["message"].startswith("the request body is not valid JSON"), error
    not_utf8 = client.post(
        "/api/v1/segments", content=b'{"name": "\xff\xfe"}', headers=json_headers
    )
    error = _error(not_utf8, 422)
    assert "not UTF-8 (byte 0xff" in error["message"]
    deep = b"[" * 100_000 + b"]" * 100_000  # past the parser's depth (under the default limit)
    with TestClient(create_app(settings, engine, clock=clock)) as roomy:
        nested = roomy.post("/api/v1/suppressions", content=deep, headers=json_headers)
    assert "nested too deeply" in _error(nested, 422)["message"]

    for path, body, field in [
        ("/api/v1/segments", {"name": 5, "filter": {}}, "name"),
        ("/api/v1/segments/count", {"filter": {}, "sample": "many"}, "sample"),
        ("/api/v1/suppressions", {"phone": ["0912000002"]}, "phone"),
        ("/api/v1/consents", {"phone": "0912000002", "given_at": "yesterday"}, "given_at"),
        ("/api/v1/districts/440/plays", [{**PLAY, "item": "first"}], "0.item"),
        ("/api/v1/districts/440/plays", {"plays": [PLAY]}, None),  # an object, not a list
        ("/api/v1/campaigns", {**SPEC, "waves": "W"}, "waves"),
    ]:
        error = _error(client.post(path, json=body, headers=admin), 422)
        assert error["field"] == field, (path, error)
    assert _rows(engine) == before


def test_unknown_fields_are_refused_by_name(
    client: TestClient,
    admin: dict[str, str],
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
) -> None:
    campaign_id = launch(engine, SPEC, settings, clock())
    before = _rows(engine)
    for method, path, body, field in [
        ("POST", "/api/v1/segments", {"name": "a", "filter": {}, "colour": "red"}, "colour"),
        ("PUT", "/api/v1/segments/a", {"filter": {}, "name": "b"}, "name"),
        ("POST", "/api/v1/segments/count", {"filter": {}, "limit": 5}, "limit"),
        ("POST", "/api/v1/suppressions", {"phone": "0912000002", "until": "never"}, "until"),
        ("POST", "/api/v1/consents", {"phone": "0912000002", "source": "web"}, "source"),
        (
            "POST",
            f"/api/v1/campaigns/{campaign_id}/waves/1/test-send",
            {"to": ["0912000002"], "from": "BHXH"},
            "from",
        ),
        ("POST", "/api/v1/districts/440/plays", [{**PLAY, "volume": 9}], "0.volume"),
    ]:
        error = _error(client.request(method, path, json=body, headers=admin), 422)
        assert error["field"] == field, (path, error)
        assert f"{field}: unknown field" in error["message"], error
    # The campaign spec has its own validator, which names the wave and the field the same way.
    error = _error(
        client.post("/api/v1/campaigns", json={**SPEC, "owner": "x"}, headers=admin), 422
    )
    assert error["code"] == "invalid_spec"
    assert "owner" in error["message"]
    assert _rows(engine) == before


def test_a_body_over_the_limit_is_a_413_that_names_it(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    before = _rows(engine)
    big = {"phone": "0912000002", "note": "x" * (2 * LIMIT)}
    error = _error(client.post("/api/v1/suppressions", json=big, headers=admin), 413)
    assert error["code"] == "too_large"
    assert "larger than 2,048 bytes (LOA_API_MAX_BODY_BYTES)" in error["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: judged as the body arrives
        yield b'{"phone": "0912000002", "note": "'
        for _ in range(10):
            yield b"y" * 512
        yield b'"}'

    streamed = client.post(
        "/api/v1/suppressions",
        content=chunks(),
        headers={**admin, "Content-Type": "application/json"},
    )
    assert _error(streamed, 413)["code"] == "too_large"
    assert _rows(engine) == before

    # Uploads have their own, larger limits (LOA_IMPORT_MAX_BYTES).
    csv = b"phone\n" + b"".join(b"09120%05d\n" % n for n in range(400))
    assert len(csv) > LIMIT
    imported = client.post(
        "/api/v1/suppressions/import", content=csv, headers={**admin, "Content-Type": "text/csv"}
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["added"] == 400


SQL = "'; DROP TABLE suppression; --"


def test_sql_looking_strings_are_only_data(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    added = client.post(
        "/api/v1/suppressions", json={"phone": "0912000002", "note": SQL}, headers=admin
    )
    assert added.status_code == 201, added.text
    assert added.json()["note"] == SQL
    created = client.post("/api/v1/campaigns", json={**SPEC, "name": SQL}, headers=admin)
    assert created.status_code == 201, created.text
    assert (
        client.get(f"/api/v1/campaigns/{created.json()['id']}", headers=admin).json()["name"] == SQL
    )

    assert _error(client.get("/api/v1/segments/x' OR '1'='1", headers=admin), 404)
    error = _error(
        client.post("/api/v1/segments", json={"name": SQL, "filter": {}}, headers=admin), 422
    )
    assert error["field"] == "name"
    found = client.get(
        "/api/v1/deliveries",
        params={"channel": "sms' OR 1=1 --", "error_code": "x' OR '1'='1", "area": "1;--"},
        headers=admin,
    )
    assert (found.status_code, found.json()["items"]) == (200, [])
    wrong_status = client.get("/api/v1/deliveries", params={"status": "x';--"}, headers=admin)
    assert _error(wrong_status, 422)["field"] == "status"
    listed = client.get("/api/v1/suppressions", params={"reason": SQL}, headers=admin)
    assert _error(listed, 422)["field"] == "reason"  # a closed list: not one of its values
    with session_scope(engine) as session:  # the table is still there, with the row
        assert session.scalars(select(col(Suppression.note))).all() == [SQL]
        assert session.scalars(select(col(Campaign.name))).all() == [SQL]


def test_nul_characters_are_refused_where_they_are(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    """PostgreSQL's text cannot hold NUL: refused before any query, on both databases alike."""
    before = _rows(engine)
    for response, field in [
        (client.get("/api/v1/segments/a%00b", headers=admin), "name"),
        (client.get("/api/v1/deliveries.csv?channel=%00", headers=admin), "channel"),
        (client.get("/api/v1/deliveries?area=4%002", headers=admin), "area"),
        (
            client.post(
                "/api/v1/suppressions", json={"phone": "0912000002", "note": "a\x00"}, headers=admin
            ),
            "note",
        ),
        (
            client.post("/api/v1/campaigns", json={**SPEC, "waves": [{"\x00": 1}]}, headers=admin),
            "waves.0.\x00",
        ),
    ]:
        error = _error(response, 422)
        assert error["field"] == field
        assert "contains a NUL character" in error["message"]
    assert _rows(engine) == before
    # Written out in the text, it is only text.
    kept = client.post(
        "/api/v1/suppressions", json={"phone": "0912000003", "note": "\\u0000"}, headers=admin
    )
    assert (kept.status_code, kept.json()["note"]) == (201, "\\u0000")


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/suppressions", {"limit": 0}, "limit"),
        ("/api/v1/suppressions", {"limit": -5}, "limit"),
        ("/api/v1/suppressions", {"limit": 1001}, "limit"),
        ("/api/v1/suppressions", {"after": "not-a-cursor"}, "after"),
        ("/api/v1/suppressions", {"after": "x" * 10_000}, "after"),
        ("/api/v1/consents", {"limit": 10**12}, "limit"),
        ("/api/v1/audio", {"limit": -1}, "limit"),
        ("/api/v1/audio", {"after": "' OR 1=1 --"}, "after"),
        ("/api/v1/deliveries", {"limit": 0}, "limit"),
        ("/api/v1/deliveries", {"limit": 10**9}, "limit"),
        ("/api/v1/deliveries", {"after": -1}, "after"),
        ("/api/v1/deliveries", {"after": 2**64}, "after"),
        ("/api/v1/deliveries", {"campaign_id": 2**31}, "campaign_id"),
        ("/api/v1/segments/nong-dan/count", {"sample": -1}, "sample"),
        ("/api/v1/campaigns/99999999999999999999", {}, "campaign_id"),
        ("/api/v1/campaigns/-3/stats", {}, "campaign_id"),
    ],
)
def test_page_sizes_offsets_and_ids_out_of_range_are_422s(
    client: TestClient, admin: dict[str, str], path: str, params: dict[str, int], field: str
) -> None:
    error = _error(client.get(path, params=params, headers=admin), 422)
    assert (error["code"], error["field"]) == ("invalid", field)


def test_dates_outside_the_calendar_loa_takes_are_422s(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    """Year 1 or 9999 with a zone (or a day added) leaves Python's calendar: these were 500s."""
    before = _rows(engine)
    wave = SPEC["waves"][0]
    for response, field in [
        (
            client.get("/api/v1/deliveries?since=0001-01-01T00:00:00%2B14:00", headers=admin),
            "since",
        ),
        (client.get("/api/v1/deliveries?until=9999-12-31T23:59:00-14:00", headers=admin), "until"),
        (client.get("/api/v1/districts/440/plays?to=9999-12-31", headers=admin), "to"),
        (client.get("/api/v1/plays.csv?from=0001-01-01", headers=admin), "from"),
        (
            client.post(
                "/api/v1/consents",
                json={"phone": "0912000002", "given_at": "0001-01-01T00:00:00+14:00"},
                headers=admin,
            ),
            "given_at",
        ),
        (
            client.post(
                "/api/v1/districts/440/plays",
                json=[{**PLAY, "started_at": "0001-01-01T00:00:00+07:00"}],
                headers=admin,
            ),
            "0.started_at",
        ),
        (
            client.post(
                "/api/v1/campaigns",
                json={**SPEC, "waves": [{**wave, "at": "0001-01-01 00:00"}]},
                headers=admin,
            ),
            "waves.0.at",
        ),
        (
            client.post(
                "/api/v1/campaigns",
                json={
                    **SPEC,
                    "waves": [
                        {
                            **{k: v for k, v in wave.items() if k != "at"},
                            "relative": {"attribute": "d", "offset": "-99999999999d"},
                        }
                    ],
                },
                headers=admin,
            ),
            "waves.0.relative.offset",
        ),
    ]:
        error = _error(response, 422)
        assert error["field"] == field, error
    assert _rows(engine) == before
    # A number past 64 bits in a segment's filter is compared as a number, not a crash.
    counted = client.post(
        "/api/v1/segments/count",
        json={"filter": {"attributes": {"n": {"in": [10**30]}}}},
        headers=admin,
    )
    assert (counted.status_code, counted.json()["count"]) == (200, 0)


def test_refused_keys_are_401s_and_write_nothing(
    client: TestClient, engine: Engine, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        revoked = create_key(session, role=Role.ADMIN, actor="t", now=clock()).key
        revoke_key(session, revoked.split("_")[1], actor="t", now=clock())
        expiring = create_key(
            session, role=Role.ADMIN, actor="t", now=clock(), expires_in=timedelta(hours=1)
        ).key
    clock.advance(hours=2)
    before = _rows(engine)
    for key, says in [(revoked, "was revoked"), (expiring, "expired at"), ("loa_x_y", "unknown")]:
        for method, path, body in [
            ("POST", "/api/v1/suppressions", {"phone": "0912000002"}),
            ("GET", "/api/v1/deliveries", None),
        ]:
            response = client.request(
                method,
                path,
                json=body,
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "k"},
            )
            error = _error(response, 401)
            assert error["code"] == "unauthenticated"
            assert says in error["message"]
            assert response.headers["WWW-Authenticate"] == "Bearer"
    assert _rows(engine) == before


def test_an_unexpected_error_is_a_500_with_a_request_id_and_no_traceback(
    client: TestClient,
    admin: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the secret detail of a bug")

    monkeypatch.setattr(api.routes.segments, "list_segments", broken)
    with caplog.at_level(logging.ERROR, logger="api.errors"):
        response = client.get("/api/v1/segments", headers=admin)
    error = _error(response, 500)
    request_id = response.headers["X-Request-ID"]
    assert error == {
        "code": "internal_error",
        "message": f"an unexpected error; it is logged with request id {request_id}",
        "field": None,
    }
    assert "secret detail" not in response.text
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "the secret detail of a bug" in str(logged[0].exc_info[1])


def test_the_openapi_description_declares_what_the_api_checks(client: TestClient) -> None:
    description = client.get("/openapi.json").json()
    schemas = description["components"]["schemas"]

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in schema:
            return resolve(schemas[schema["$ref"].rsplit("/", 1)[1]])
        if schema.get("type") == "array":
            return resolve(schema["items"])
        return schema

    bodies = 0
    for path, operations in description["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            json_body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            body = resolve(json_body["schema"]) if json_body else {}
            if body.get("type") == "object" and body.get("properties"):
                bodies += 1
                assert body.get("additionalProperties") is False, f"{where} takes unknown fields"
            if not path.startswith("/api/v1/"):
                continue
            for status in ("401", "422", "500"):
                declared = operation["responses"][status]["content"]["application/json"]
                assert declared["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, where
            if method == "post" and not path.startswith("/api/v1/apikeys"):
                # API keys excepted: a replay would need the secret, which is stored nowhere.
                headers = {
                    p["name"] for p in operation.get("parameters", []) if p["in"] == "header"
                }
                assert "Idempotency-Key" in headers, f"{where} has no Idempotency-Key"
    assert bodies >= 6
