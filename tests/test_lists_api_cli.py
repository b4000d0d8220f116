"""The suppression list and consents over HTTP (roles, paging, CSV imports with their report,
the opt-out guard) and on the command line. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlmodel import col

from api.app import create_app
from loa.apikeys import Role, create_key
from loa.db import session_scope
from loa.models import AuditEntry, Consent, Suppression
from loa.settings import Settings
from tests.clirun import loa_env, run_loa
from tests.conftest import FakeClock


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine, clock=clock)) as test_client:
        yield test_client


@pytest.fixture
def keys(engine: Engine, clock: FakeClock) -> dict[Role, dict[str, str]]:
    with session_scope(engine) as session:
        return {
            role: {
                "Authorization": "Bearer "
                + create_key(session, role=role, actor="t", now=clock(), area_code=None).key
            }
            for role in (Role.ADMIN, Role.PLANNER, Role.OPERATOR)
        }


def test_suppressions_over_http(
    client: TestClient, keys: dict[Role, dict[str, str]], engine: Engine
) -> None:
    base = "/api/v1/suppressions"
    planner, operator = keys[Role.PLANNER], keys[Role.OPERATOR]
    added = client.post(base, json={"phone": "0912 000 001", "reason": "opt_out"}, headers=planner)
    assert added.status_code == 201, added.text
    assert added.json()["phone"] == "+84912000001"
    refused = client.post(base, json={"phone": "0912000002"}, headers=operator)
    assert refused.status_code == 403
    assert client.get(base).status_code == 401
    bad = client.post(base, json={"phone": "0912000002", "reason": "spam"}, headers=planner)
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "reason")

    csv = "sdt,ly_do\n0912000002,\n0912000003,invalid\n0912000004,spam\n0912000001,manual\n"
    dry = client.post(
        f"{base}/import?dry_run=true",
        content=csv.encode(),
        headers={**planner, "Content-Type": "text/csv"},
    )
    assert dry.status_code == 200, dry.text
    assert (dry.json()["added"], dry.json()["dry_run"]) == (2, True)
    imported = client.post(
        f"{base}/import?reason=manual",
        content=csv.encode(),
        headers={**keys[Role.ADMIN], "Content-Type": "text/csv"},
    ).json()
    assert (imported["rows_read"], imported["added"], imported["updated"]) == (4, 2, 1)
    assert imported["kept_opt_out"] == 1
    assert imported["rejected"] == [
        {
            "line": 4,
            "column": "ly_do",
            "value": "spam",
            "reason": "unknown suppression reason 'spam'; use one of opt_out, do_not_contact, "
            "invalid, manual",
        }
    ]
    no_phone = client.post(
        f"{base}/import", content=b"ho_ten\nAn\n", headers={**planner, "Content-Type": "text/csv"}
    )
    assert no_phone.status_code == 422
    assert no_phone.json()["error"]["message"].startswith("request body: no phone column")

    page = client.get(f"{base}?limit=2", headers=operator).json()
    rest = client.get(base, params={"after": page["next_after"]}, headers=operator).json()
    assert (len(page["items"]), len(rest["items"]), rest["next_after"]) == (2, 1, None)
    opted = client.get(f"{base}?reason=opt_out", headers=operator).json()
    assert [i["phone"] for i in opted["items"]] == ["+84912000001"]

    guarded = client.delete(f"{base}/+84912000001", headers=planner)
    assert guarded.status_code == 409
    assert "asked to receive messages again" in guarded.json()["error"]["message"]
    assert client.delete(f"{base}/0912000001", headers=operator).status_code == 403
    removed = client.delete(f"{base}/0912000001?opt_out_withdrawn=true", headers=planner)
    assert removed.status_code == 200
    assert client.delete(f"{base}/0912000009", headers=planner).status_code == 404
    with session_scope(engine) as session:
        assert set(session.scalars(select(col(Suppression.phone)))) == {
            "+84912000002",
            "+84912000003",
        }
        actors = set(
            session.scalars(
                select(col(AuditEntry.actor)).where(col(AuditEntry.entity) == "suppression")
            )
        )
    assert {a[:4] for a in actors} == {"key:"} and len(actors) == 2  # the planner, the admin


def test_consents_over_http(
    client: TestClient, keys: dict[Role, dict[str, str]], engine: Engine
) -> None:
    base = "/api/v1/consents"
    planner, operator = keys[Role.PLANNER], keys[Role.OPERATOR]
    assert client.post(base, json={"phone": "0912000001"}, headers=operator).status_code == 403
    created = client.post(base, json={"phone": "0912000001", "note": "DKQC"}, headers=planner)
    assert created.status_code == 201, created.text
    imported = client.post(
        f"{base}/import",
        content="phone,given_at\n0912000002,01/05/2026\n0912000003,hôm qua\n".encode(),
        headers={**planner, "Content-Type": "text/csv"},
    ).json()
    assert (imported["added"], len(imported["rejected"])) == (1, 1)
    assert imported["rejected"][0]["line"] == 3
    listed = client.get(base, headers=operator).json()
    assert (len(listed["items"]), listed["next_after"]) == (2, None)
    assert client.delete(f"{base}/0912000001", headers=planner).status_code == 200
    with session_scope(engine) as session:
        assert list(session.scalars(select(col(Consent.phone)))) == ["+84912000002"]


def test_suppression_and_consent_on_the_command_line(db_url: str, tmp_path: Path) -> None:
    env = loa_env(db_url, tmp_path)
    run_loa("suppression", "add", "0912000001", "--reason", "do_not_contact", env=env)
    out = run_loa("suppression", "inbound", "--from", "0912000002", "Từ chối", env=env).stdout
    assert out.strip() == "+84912000002 opted out (TU CHOI): suppressed"
    mention = run_loa("suppression", "inbound", "--from", "0912000003", "Anh Huy đây", env=env)
    assert "not an opt-out: the text mentions HUY" in mention.stdout

    listing = tmp_path / "dnc.csv"
    listing.write_text("phone,reason\n0912000004,\nabc,\n0912000005,manual\n", encoding="utf-8")
    report = tmp_path / "rejected.csv"
    result = run_loa("suppression", "import", str(listing), "--report", str(report), env=env)
    assert f"{listing}: 3 rows read, added 2 new and 0 already listed, 1 rejected" in result.stdout
    assert "line 3, phone 'abc'" in result.stderr
    assert report.read_text("utf-8-sig").splitlines()[1].startswith("3,phone,abc,")

    refused = run_loa("suppression", "remove", "0912000002", env=env, check=False)
    assert refused.returncode == 1
    assert "--opt-out-withdrawn" in refused.stderr and "Traceback" not in refused.stderr
    run_loa("suppression", "remove", "0912000002", "--opt-out-withdrawn", env=env)
    listed = run_loa("suppression", "list", env=env).stdout
    assert "+84912000001  do_not_contact" in listed
    assert "3 shown; that is the end of the list" in listed

    run_loa("consent", "add", "0912000006", "--note", "form", env=env)
    consents = tmp_path / "consent.csv"
    consents.write_text("so_dien_thoai\n0912000007\n0912000001\n", encoding="utf-8")
    imported = run_loa("consent", "import", str(consents), env=env)
    assert "added 2 new" in imported.stdout
    assert "1 of these number(s) are on the suppression list" in imported.stderr
    first = run_loa("consent", "list", "--limit", "2", env=env).stdout
    assert "2 shown; more with: --after " in first
    cursor = first.rsplit("--after ", 1)[1].strip()
    rest = run_loa("consent", "list", "--after", cursor, env=env).stdout
    assert "1 shown; that is the end of the list" in rest
    bad = run_loa("suppression", "inbound", "--from", "12345", "STOP", env=env, check=False)
    assert bad.returncode == 1 and "Error: " in bad.stderr
