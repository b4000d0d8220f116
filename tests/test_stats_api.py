"""GET /api/v1/stats and /api/v1/stats.csv, and `loa stats`, over the campaigns of
tests/rollup_scenario.py: the same figures as query_stats, a district key held to its area, bad
input refused naming the field. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from loa.apikeys import Role, create_key
from loa.db import session_scope
from loa.settings import Settings
from stats.rollup import MEASURES, key_columns, query_stats
from tests import rollup_scenario
from tests.clirun import loa_env, run_loa
from tests.conftest import FakeClock


@pytest.fixture
def priced(settings: Settings) -> Settings:
    return rollup_scenario.priced(settings)


@pytest.fixture
def lived(engine: Engine, priced: Settings, clock: FakeClock) -> dict[str, int]:
    return rollup_scenario.live_campaigns(engine, priced, clock)


@pytest.fixture
def client(priced: Settings, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(priced, engine, clock=clock)) as test_client:
        yield test_client


def _key(engine: Engine, clock: FakeClock, role: Role, area: str | None = None) -> dict[str, str]:
    with session_scope(engine) as session:
        key = create_key(session, role=role, actor="t", now=clock(), area_code=area).key
    return {"Authorization": f"Bearer {key}"}


def _direct(engine: Engine, settings: Settings, **kwargs: Any) -> list[dict[str, Any]]:
    with session_scope(engine) as session:
        rows = query_stats(session, prices=settings, timezone=settings.default_timezone, **kwargs)
    return [row.model_dump() for row in rows]


@pytest.mark.usefixtures("lived")
def test_every_province_role_reads_the_figures_query_stats_gives(
    client: TestClient, engine: Engine, priced: Settings, clock: FakeClock
) -> None:
    expected = _direct(engine, priced, group_by=["district", "channel"])
    assert expected  # the scenario has messages and plays
    for role in (Role.ADMIN, Role.PLANNER, Role.APPROVER, Role.OPERATOR):
        answer = client.get(
            "/api/v1/stats",
            params={"group_by": "district, channel"},
            headers=_key(engine, clock, role),
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["group_by"] == ["district", "channel"]
        assert body["timezone"] == "Asia/Ho_Chi_Minh"
        assert body["rows"] == expected
    assert client.get("/api/v1/stats").status_code == 401


def test_filters_reach_the_query(
    client: TestClient, engine: Engine, priced: Settings, clock: FakeClock, lived: dict[str, int]
) -> None:
    operator = _key(engine, clock, Role.OPERATOR)
    params = {
        "group_by": "commune,error_code",
        "campaign_id": lived["sms"],
        "area_code": "440",
        "day_from": "2026-05-08",
        "day_to": "2026-05-08",
        "timezone": "America/New_York",
    }
    answer = client.get("/api/v1/stats", params=params, headers=operator)
    assert answer.status_code == 200, answer.text
    # In New York the first campaign's messages went out on 7 May: nothing on the 8th.
    assert answer.json()["rows"] == []
    params["timezone"] = "Asia/Ho_Chi_Minh"
    rows = client.get("/api/v1/stats", params=params, headers=operator).json()["rows"]
    assert {(r["key"]["commune"], r["key"]["error_code"]): r["failed"] for r in rows} == {
        ("18301", "21211"): 1,
        ("18301", "30003"): 1,
        ("18301", None): 0,
        ("18302", "20429"): 0,
        ("18302", None): 0,
    }


@pytest.mark.usefixtures("lived")
def test_the_csv_has_the_same_rows(
    client: TestClient, engine: Engine, priced: Settings, clock: FakeClock
) -> None:
    operator = _key(engine, clock, Role.OPERATOR)
    params = {"group_by": "campaign,province"}
    answer = client.get("/api/v1/stats.csv", params=params, headers=operator)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert list(rows[0]) == [*key_columns(["campaign", "province"]), *MEASURES]
    expected = client.get("/api/v1/stats", params=params, headers=operator).json()["rows"]
    assert len(rows) == len(expected) == 4  # SMS in 42 and 40, Late in 40, Loa in 42
    for got, want in zip(rows, expected, strict=True):
        assert got["campaign_name"] == want["key"]["campaign_name"]
        assert got["province"] == want["key"]["province"]
        assert int(got["targeted"]) == want["targeted"] and int(got["plays"]) == want["plays"]
        assert float(got["cost"]) == want["cost"]
        assert got["delivery_rate"] == (
            "" if want["delivery_rate"] is None else str(want["delivery_rate"])
        )


@pytest.mark.usefixtures("lived")
def test_a_district_key_reads_its_own_area_only(
    client: TestClient, engine: Engine, clock: FakeClock
) -> None:
    district = _key(engine, clock, Role.DISTRICT, area="440")
    own = client.get("/api/v1/stats", params={"group_by": "commune"}, headers=district)
    assert own.status_code == 200, own.text
    assert [r["key"]["commune"] for r in own.json()["rows"]] == ["18301", "18302"]
    one = client.get("/api/v1/stats", params={"area_code": "18302"}, headers=district).json()
    assert one["rows"][0]["targeted"] == 3
    for other in ("40", "42", "16801"):
        refused = client.get("/api/v1/stats", params={"area_code": other}, headers=district)
        assert refused.status_code == 403, refused.text
        assert (
            client.get(
                "/api/v1/stats.csv", params={"area_code": other}, headers=district
            ).status_code
            == 403
        )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "district,county"}, "group_by"),
        ({"day_from": "2026-02-30"}, "day_from"),
        ({"day_to": "yesterday"}, "day_to"),
        ({"day_from": "2026-05-09", "day_to": "2026-05-08"}, "day_from"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"area_code": "99999"}, "area_code"),
        ({"campaign_id": "one"}, "campaign_id"),
        ({"campaign_id": "-1"}, "campaign_id"),
        ({"wave_id": str(2**40)}, "wave_id"),  # past the column's integers (found by Schemathesis)
        ({"day_from": "0683-01-01"}, "day_from"),
        ({"day_to": "9999-12-31"}, "day_to"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    client: TestClient, engine: Engine, clock: FakeClock, params: dict[str, str], field: str
) -> None:
    operator = _key(engine, clock, Role.OPERATOR)
    for path in ("/api/v1/stats", "/api/v1/stats.csv"):
        answer = client.get(path, params=params, headers=operator)
        assert answer.status_code == 422, (path, params, answer.text)
        assert answer.json()["error"]["field"] == field


def test_the_cli_prints_the_same_figures(
    db_url: str, tmp_path: Path, engine: Engine, priced: Settings, lived: dict[str, int]
) -> None:
    env = loa_env(db_url, tmp_path, LOA_SMS_PRICES=json.dumps(rollup_scenario.PRICES))
    expected = _direct(engine, priced, group_by=["district", "channel"])
    as_json = run_loa("stats", "--group-by", "district,channel", "--json", env=env).stdout
    assert json.loads(as_json) == expected

    table = run_loa("stats", "--group-by", "district,channel", env=env).stdout.splitlines()
    header = table[0].split()
    assert header[:4] == ["district", "district_name", "channel", "targeted"]
    lines = {tuple(line.split()[:2]): line.split() for line in table[1:]}
    # District 440's SMS: "440 Huyện Đức Thọ sms ..." (the name has spaces: count from the end).
    sms_440 = next(v for k, v in lines.items() if k[0] == "440" and "sms" in v)
    want = next(
        r
        for r in expected
        if r["key"] == {"district": "440", "district_name": "Huyện Đức Thọ", "channel": "sms"}
    )
    assert sms_440[-len(MEASURES) :][0] == str(want["targeted"])
    assert sms_440[-1] == str(want["plays"])

    by_campaign = run_loa("stats", "--campaign", str(lived["sms"]), "--json", env=env).stdout
    assert json.loads(by_campaign)[0]["targeted"] == 8
    # A campaign with a filter: the rollup's figures for it, not the per-wave view.
    filtered = run_loa("stats", str(lived["sms"]), "--channel", "sms", "--json", env=env).stdout
    assert [row["targeted"] for row in json.loads(filtered)] == [8]
    refused = run_loa("stats", "--group-by", "county", env=env, check=False)
    assert refused.returncode == 1 and "cannot group by 'county'" in refused.stderr
    bad_day = run_loa("stats", "--from", "2026-13-01", env=env, check=False)
    assert bad_day.returncode == 2 and "not a date" in bad_day.stderr
    # With a campaign and no grouping, the campaign's waves by status, as before.
    assert "8 messages" in run_loa("stats", str(lived["sms"]), env=env).stdout
