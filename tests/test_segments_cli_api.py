"""`loa segments` and /api/v1/segments as users call them, on SQLite and PostgreSQL: saving,
reading, counting with a sample, refusals (bad filter with the field, a taken name, a segment in
use, a role that may only read)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from loa.apikeys import Role, create_key
from loa.db import session_scope
from loa.settings import Settings
from tests.builders import add_areas, add_recipient, launch
from tests.clirun import loa_env, run_loa
from tests.conftest import FakeClock

FILTER = {"areas": ["440"], "tags": ["nong-dan"]}


@pytest.fixture(autouse=True)
def people(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        add_recipient(session, "+84912000001", now=clock(), name="An", tags=("nong-dan",))
        add_recipient(
            session, "+84912000002", now=clock(), name="Bình", area="18302", tags=("nong-dan",)
        )
        add_recipient(session, "+84912000003", now=clock(), name="Chi", area="16801")


def test_loa_segments_commands(db_url: str, tmp_path: Path) -> None:
    env = loa_env(db_url, tmp_path)
    spec = tmp_path / "f.json"
    spec.write_text(json.dumps(FILTER), encoding="utf-8")
    created = run_loa("segments", "create", "nong-dan-440", "--filter", str(spec), env=env)
    assert "created segment 'nong-dan-440'" in created.stdout
    listed = run_loa("segments", "list", env=env).stdout
    assert "nong-dan-440" in listed and '"440"' in listed
    shown = json.loads(run_loa("segments", "show", "nong-dan-440", env=env).stdout)
    assert shown["filter"] == FILTER and shown["waves_not_yet_expanded"] == []

    counted = json.loads(
        run_loa("segments", "count", "nong-dan-440", "--sample", "1", "--json", env=env).stdout
    )
    assert counted["count"] == 2
    assert counted["sample"] == [
        {"id": 1, "phone": "+84912***001", "name": "An", "area_code": "18301"}
    ]
    text = run_loa("segments", "count", "--filter-json", '{"areas": ["40"]}', env=env).stdout
    assert text.startswith("1 recipient(s) in the filter as of ")
    assert "+84912***003" in text and "Chi" in text

    bad = run_loa(
        "segments",
        "create",
        "x",
        "--filter-json",
        '{"attributes": {"card_expiry": {"within": 30}}}',
        env=env,
        check=False,
    )
    assert bad.returncode == 1
    assert "--filter-json: field filter.attributes.card_expiry.within: unknown operator" in (
        bad.stderr
    )
    not_json = run_loa("segments", "create", "x", "--filter-json", "{areas", env=env, check=False)
    assert "not valid JSON at line 1, column 2" in not_json.stderr
    taken = run_loa(
        "segments", "create", "nong-dan-440", "--filter", str(spec), env=env, check=False
    )
    assert "exists already" in taken.stderr

    assert "deleted" in run_loa("segments", "delete", "nong-dan-440", env=env).stdout
    gone = run_loa("segments", "show", "nong-dan-440", env=env, check=False)
    assert gone.returncode == 1 and "no segment named 'nong-dan-440'" in gone.stderr


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine, clock=clock)) as test_client:
        yield test_client


def _keys(engine: Engine, clock: FakeClock) -> dict[Role, dict[str, str]]:
    with session_scope(engine) as session:
        return {
            role: {
                "Authorization": "Bearer "
                + create_key(session, role=role, actor="t", now=clock()).key
            }
            for role in (Role.PLANNER, Role.OPERATOR)
        }


def test_segments_over_the_api(
    client: TestClient, engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    keys = _keys(engine, clock)
    planner, operator = keys[Role.PLANNER], keys[Role.OPERATOR]
    base = "/api/v1/segments"
    body = {"name": "nong-dan-440", "description": "Nông dân Đức Thọ", "filter": FILTER}

    assert client.post(base, json=body, headers=operator).status_code == 403
    created = client.post(base, json=body, headers=planner)
    assert created.status_code == 201, created.text
    assert created.json()["created_by"].startswith("key:")
    taken = client.post(base, json=body, headers=planner)
    assert taken.status_code == 409 and taken.json()["error"]["field"] == "name"
    bad = client.post(
        base, json={"name": "y", "filter": {"areas": ["42", "nope"]}}, headers=planner
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "filter.areas"
    assert "unknown area code(s) nope" in bad.json()["error"]["message"]
    bad_date = client.post(
        base,
        json={"name": "y", "filter": {"attributes": {"d": {"before": "1/5/2026"}}}},
        headers=planner,
    )
    assert bad_date.status_code == 422
    assert bad_date.json()["error"]["field"] == "filter.attributes.d.before"

    listed = client.get(base, headers=operator).json()
    assert [s["name"] for s in listed["items"]] == ["nong-dan-440"]
    assert client.get(f"{base}/nong-dan-440", headers=operator).json()["filter"] == FILTER
    assert client.get(f"{base}/khong-co", headers=operator).status_code == 404

    counted = client.get(f"{base}/nong-dan-440/count?sample=1", headers=operator).json()
    assert counted == {
        "count": 2,
        "as_of": "2026-05-08",
        "sample": [{"id": 1, "phone": "+84912***001", "name": "An", "area_code": "18301"}],
    }
    adhoc = client.post(
        f"{base}/count", json={"filter": {"areas": ["42"]}, "sample": 0}, headers=operator
    )
    assert adhoc.json() == {"count": 2, "as_of": "2026-05-08", "sample": []}
    bad_count = client.post(f"{base}/count", json={"filter": {"tags": []}}, headers=operator)
    assert bad_count.status_code == 422 and bad_count.json()["error"]["field"] == "filter.tags"

    replaced = client.put(
        f"{base}/nong-dan-440", json={"filter": {"areas": ["18302"]}}, headers=planner
    )
    assert replaced.status_code == 200 and replaced.json()["description"] == "Nông dân Đức Thọ"
    assert client.get(f"{base}/nong-dan-440/count", headers=operator).json()["count"] == 1

    spec = {
        "name": "C",
        "waves": [
            {
                "name": "W",
                "channel": "sms",
                "at": "2026-05-09 07:30",
                "audience": {"segment": "nong-dan-440"},
                "template": "x",
            }
        ],
    }
    launch(engine, spec, settings, clock())
    in_use = client.delete(f"{base}/nong-dan-440", headers=planner)
    assert in_use.status_code == 409 and "wave 1 ('W')" in in_use.json()["error"]["message"]
    shown = client.get(f"{base}/nong-dan-440", headers=operator).json()
    assert shown["waves_not_yet_expanded"] == [{"campaign_id": 1, "wave_id": 1, "wave": "W"}]
