"""The API's resources beyond the lifecycle: keyset pages (every row once, across ties, with a
maximum page size and a refused bad cursor), recipient search with masked numbers, the audit log,
a campaign's waves with their templates, API keys over HTTP, the plays page and the audit entry
of a play report. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlmodel import col

from api.app import create_app
from audience.suppression import add_suppression
from loa.apikeys import Role, create_key
from loa.db import make_engine, session_scope
from loa.errors import InvalidInput
from loa.models import AuditEntry, BroadcastItem
from loa.paging import MAX_PAGE, Key, decode_cursor, encode_cursor
from loa.settings import Settings
from scheduler.lifecycle import create_campaign, get_campaign, list_waves
from scheduler.spec import validate_spec
from tests.broadcasting import add_audio, launch_broadcast, loudspeaker_wave
from tests.builders import add_areas, add_recipient
from tests.clirun import loa_env, run_loa
from tests.conftest import FakeClock

API = "/api/v1"


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine, clock=clock)) as test_client:
        yield test_client


@pytest.fixture
def keys(engine: Engine, clock: FakeClock) -> dict[str, dict[str, str]]:
    """Authorization headers by role name ("district" is area 440's key)."""
    with session_scope(engine) as session:
        add_areas(session)
        return {
            str(role): {
                "Authorization": "Bearer "
                + create_key(
                    session,
                    role=role,
                    actor="test",
                    now=clock(),
                    area_code="440" if role == Role.DISTRICT else None,
                ).key
            }
            for role in Role
        }


def walk(client: TestClient, url: str, headers: dict[str, str], **params: Any) -> list[Any]:
    """Every item of a paged list, following next_after; fails on a repeated cursor."""
    items: list[Any] = []
    seen: set[str] = set()
    after = None
    while True:
        query = {**params, **({"after": after} if after else {})}
        response = client.get(url, params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        after = page["next_after"]
        if after is None:
            return items
        assert after not in seen
        seen.add(after)


# --- keyset pages -----------------------------------------------------------------------------


def test_a_cursor_is_opaque_and_a_foreign_one_is_refused() -> None:
    from loa.models import Suppression

    keys = [Key(col(Suppression.created_at), descending=True), Key(col(Suppression.phone))]
    values = [datetime(2026, 5, 8, 7, tzinfo=timezone(timedelta(hours=7))), "+84912000001"]
    assert decode_cursor(encode_cursor(values), keys) == values
    for bad in ("", "not-base64!", encode_cursor([1, 2]), encode_cursor(["x"]), "A" * 600):
        with pytest.raises(InvalidInput) as refused:
            decode_cursor(bad, keys)
        assert refused.value.field == "after"
    naive = encode_cursor(["2026-05-08T07:00:00", "+84912000001"])
    with pytest.raises(InvalidInput):
        decode_cursor(naive, keys)


def test_pages_give_every_row_once_across_equal_sort_keys(
    client: TestClient, keys: dict[str, dict[str, str]], engine: Engine, clock: FakeClock
) -> None:
    # Seven numbers, four added at the same instant: the page boundaries fall inside the tie.
    with session_scope(engine) as session:
        for i in range(7):
            when = clock() + timedelta(minutes=0 if i < 4 else i)
            add_suppression(
                session, f"091200000{i}", reason="manual", note=None, actor="t", now=when
            )
    operator = keys["operator"]
    items = walk(client, f"{API}/suppressions", operator, limit=2)
    phones = [i["phone"] for i in items]
    assert len(phones) == 7 == len(set(phones))
    # Newest first, then by number (descending) within the same instant.
    assert phones[:3] == ["+84912000006", "+84912000005", "+84912000004"]
    assert phones[3:] == sorted(phones[3:], reverse=True)
    one_page = client.get(f"{API}/suppressions", params={"limit": 7}, headers=operator).json()
    assert [i["phone"] for i in one_page["items"]] == phones and one_page["next_after"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": MAX_PAGE + 1}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": -5}, "limit"),
        ({"after": "bm90IGEgY3Vyc29y"}, "after"),
        ({"after": "'; DROP TABLE campaign; --"}, "after"),
    ],
)
def test_a_page_size_over_the_maximum_or_a_bad_cursor_is_a_422(
    client: TestClient, keys: dict[str, dict[str, str]], params: dict[str, Any], field: str
) -> None:
    for url in (f"{API}/campaigns", f"{API}/segments", f"{API}/recipients", f"{API}/audit"):
        response = client.get(url, params=params, headers=keys["admin"])
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"]["field"] == field, (url, response.text)


def _draft(engine: Engine, settings: Settings, clock: FakeClock, name: str) -> int:
    spec = {
        "name": name,
        "waves": [
            {
                "name": "Lễ ra quân",
                "channel": "sms",
                "class": "info",
                "at": "2026-05-08 07:30",
                "audience": {"areas": ["42"]},
                "template": "BHXH: {{ name }} oi, thang 5 la Thang van dong BHXH.",
            },
            {
                "name": "Hằng tuần",
                "channel": "sms",
                "recurring": {"from": "2026-05-09", "to": "2026-05-30", "times": ["09:00"]},
                "audience": {"areas": ["440"]},
                "template": "Nhac lai: {{ name }}",
                "unaccent": True,
            },
        ],
    }
    with session_scope(engine) as session:
        campaign = create_campaign(
            session,
            spec=validate_spec(spec, source="test"),
            actor="test",
            now=clock(),
            settings=settings,
        )
        assert campaign.id is not None
        return campaign.id


def test_campaigns_page_newest_first_and_filter_by_status(
    client: TestClient,
    keys: dict[str, dict[str, str]],
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
) -> None:
    ids = [_draft(engine, settings, clock, f"C{i}") for i in range(5)]
    planner = keys["planner"]
    assert client.post(f"{API}/campaigns/{ids[1]}/cancel", headers=keys["approver"]).is_success
    listed = walk(client, f"{API}/campaigns", planner, limit=2)
    assert [c["id"] for c in listed] == ids[::-1]
    drafts = walk(client, f"{API}/campaigns", planner, status="draft", limit=3)
    assert [c["id"] for c in drafts] == [ids[4], ids[3], ids[2], ids[0]]
    bad = client.get(f"{API}/campaigns", params={"status": "done"}, headers=planner)
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "status")


# --- a campaign's waves and their templates ---------------------------------------------------


def test_a_campaigns_waves_carry_their_templates(
    client: TestClient,
    keys: dict[str, dict[str, str]],
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
) -> None:
    campaign_id = _draft(engine, settings, clock, "C")
    url = f"{API}/campaigns/{campaign_id}/waves"
    page = client.get(url, headers=keys["approver"]).json()
    assert page["next_after"] is None
    first, second = page["items"]
    assert (first["name"], first["kind"], first["class"]) == ("Lễ ra quân", "once", "info")
    assert first["template"] == "BHXH: {{ name }} oi, thang 5 la Thang van dong BHXH."
    assert first["trigger"] == {"at": "2026-05-08 07:30"}
    assert (second["kind"], second["options"]["unaccent"], second["status"]) == (
        "recurring",
        True,
        "pending",
    )
    paged = walk(client, url, keys["operator"], limit=1)
    assert [w["id"] for w in paged] == [first["id"], second["id"]]
    missing = client.get(f"{API}/campaigns/999/waves", headers=keys["planner"])
    assert missing.status_code == 404
    assert client.get(url, headers=keys["district"]).status_code == 403


def test_a_draft_is_edited_whole_and_its_editor_may_not_approve_it(
    client: TestClient,
    keys: dict[str, dict[str, str]],
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
) -> None:
    settings.four_eyes_approval = True
    campaign_id = _draft(engine, settings, clock, "C")
    url = f"{API}/campaigns/{campaign_id}"
    with session_scope(engine) as session:
        spec = get_campaign(session, campaign_id).spec
    spec = {**spec, "name": "C2", "waves": [{**spec["waves"][0], "template": "Moi: {{ name }}"}]}
    edited = client.put(url, json=spec, headers=keys["admin"])
    assert edited.status_code == 200, edited.text
    assert (edited.json()["name"], edited.json()["status"]) == ("C2", "draft")
    waves = client.get(f"{url}/waves", headers=keys["planner"]).json()["items"]
    assert [(w["name"], w["template"]) for w in waves] == [("Lễ ra quân", "Moi: {{ name }}")]

    broken = {**spec, "waves": [{**spec["waves"][0], "template": "{{ name "}]}
    refused = client.put(url, json=broken, headers=keys["planner"])
    assert refused.status_code == 422 and "field template" in refused.json()["error"]["message"]
    assert client.get(url, headers=keys["planner"]).json()["name"] == "C2"  # nothing changed

    # Four-eyes: the admin wrote part of it, so another key approves.
    mine = client.post(f"{url}/approve", headers=keys["admin"])
    assert mine.status_code == 409 and "was edited by key:" in mine.json()["error"]["message"]
    assert client.post(f"{url}/approve", headers=keys["approver"]).status_code == 200
    late = client.put(url, json=spec, headers=keys["planner"])
    assert late.status_code == 409 and "sent as approved" in late.json()["error"]["message"]

    with session_scope(engine) as session:
        entry = session.scalars(
            select(AuditEntry).where(col(AuditEntry.action) == "campaign.edit")
        ).one()
    assert (entry.before or {})["name"] == "C" and (entry.after or {})["name"] == "C2"
    assert (entry.after or {})["spec"]["waves"][0]["template"] == "Moi: {{ name }}"


# --- recipients -------------------------------------------------------------------------------


@pytest.fixture
def people(engine: Engine, clock: FakeClock) -> dict[str, int]:
    with session_scope(engine) as session:
        made = {
            "an": add_recipient(
                session,
                "+84912000001",
                now=clock(),
                name="Nguyễn Văn An",
                area="18301",
                tags=("nong-dan",),
                attributes={"card_expiry": "2026-05-15"},
            ),
            "binh": add_recipient(
                session, "+84912000002", now=clock(), name="Nguyễn Thị Bình", area="18302"
            ),
            "dung": add_recipient(
                session,
                "+84391234567",  # written 01691234567 before 2018
                now=clock(),
                name="Đặng Dũng",
                area="16801",
                tags=("nong-dan", "tieu-thuong"),
            ),
            "nameless": add_recipient(session, "+84912000004", now=clock(), name=None),
        }
        return {who: r.id for who, r in made.items() if r.id is not None}


def _ids(client: TestClient, headers: dict[str, str], **params: Any) -> list[int]:
    return [r["id"] for r in walk(client, f"{API}/recipients", headers, limit=1, **params)]


def test_recipients_are_found_by_phone_name_area_and_tag(
    client: TestClient, keys: dict[str, dict[str, str]], people: dict[str, int]
) -> None:
    planner = keys["planner"]
    an, binh, dung = people["an"], people["binh"], people["dung"]
    for written in ("0912 000 001", "84912000001", "+84 912-000-001", "912000001"):
        assert _ids(client, planner, phone=written) == [an], written
    assert _ids(client, planner, phone="01691234567") == [dung]  # the old number finds the new
    assert _ids(client, planner, name="Nguyễn") == [an, binh]
    assert _ids(client, planner, name="Nguyễn Thị") == [binh]
    assert _ids(client, planner, name="nguyễn") == []  # case as written, on both databases
    assert _ids(client, planner, name="Đặng") == [dung]
    assert _ids(client, planner, area="42") == [an, binh, people["nameless"]]  # a province
    assert _ids(client, planner, area="440") == [an, binh, people["nameless"]]  # a district
    assert _ids(client, planner, area="18302") == [binh]  # a commune
    assert _ids(client, planner, tag="nong-dan") == [an, dung]
    assert _ids(client, planner, tag="nong-dan", area="40") == [dung]
    assert _ids(client, planner, tag="nong-dan", name="Nguyễn Thị") == []
    assert len(_ids(client, planner)) == 4

    bad_phone = client.get(f"{API}/recipients", params={"phone": "024 3825 1234"}, headers=planner)
    assert (bad_phone.status_code, bad_phone.json()["error"]["field"]) == (422, "phone")
    no_area = client.get(f"{API}/recipients", params={"area": "99"}, headers=planner)
    assert (no_area.status_code, no_area.json()["error"]["field"]) == (422, "area")
    blank = client.get(f"{API}/recipients", params={"name": "  "}, headers=planner)
    assert (blank.status_code, blank.json()["error"]["field"]) == (422, "name")


def test_numbers_are_whole_for_admins_and_planners_only(
    client: TestClient, keys: dict[str, dict[str, str]], people: dict[str, int]
) -> None:
    url = f"{API}/recipients/{people['an']}"
    for role in ("admin", "planner"):
        record = client.get(url, headers=keys[role]).json()
        assert (record["phone"], record["phone_masked"]) == ("+84912000001", False)
        assert record["attributes"] == {"card_expiry": "2026-05-15"}
        assert (record["tags"], record["area_code"]) == (["nong-dan"], "18301")
    for role in ("approver", "operator"):
        record = client.get(url, headers=keys[role]).json()
        assert (record["phone"], record["phone_masked"]) == ("+84912***001", True)
        assert record["attributes"] is None and record["name"] == "Nguyễn Văn An"
        found = client.get(f"{API}/recipients", params={"tag": "nong-dan"}, headers=keys[role])
        assert all("***" in r["phone"] for r in found.json()["items"])
        # Nor may they search by number, which would unmask numbers one guess at a time.
        probe = client.get(f"{API}/recipients", params={"phone": "0912000001"}, headers=keys[role])
        assert (probe.status_code, probe.json()["error"]["field"]) == (403, "phone")
    assert client.get(url, headers=keys["district"]).status_code == 403
    assert client.get(url).status_code == 401
    assert client.get(f"{API}/recipients/999999", headers=keys["admin"]).status_code == 404
    assert client.get(f"{API}/recipients/0", headers=keys["admin"]).status_code == 422


# --- the audit log ----------------------------------------------------------------------------


def test_the_audit_log_is_for_admins_filtered_and_paged(
    client: TestClient,
    keys: dict[str, dict[str, str]],
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
) -> None:
    planner, admin = keys["planner"], keys["admin"]
    campaign_id = _draft(engine, settings, clock, "C")
    clock.advance(hours=1)
    added = client.post(f"{API}/suppressions", json={"phone": "0912000009"}, headers=planner)
    assert added.status_code == 201
    clock.advance(hours=1)
    client.post(f"{API}/campaigns/{campaign_id}/approve", headers=keys["approver"])

    for role in ("planner", "approver", "operator", "district"):
        assert client.get(f"{API}/audit", headers=keys[role]).status_code == 403
    everything = walk(client, f"{API}/audit", admin, limit=2)
    assert [e["action"] for e in everything[:3]] == [
        "campaign.approve",
        "suppression.add",
        "campaign.create",
    ]
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)

    planner_prefix = planner["Authorization"].split("_")[1]
    by_planner = walk(client, f"{API}/audit", admin, actor=f"key:{planner_prefix}")
    assert [(e["entity"], e["entity_id"]) for e in by_planner] == [("suppression", "+84912000009")]
    assert by_planner[0]["before"] is None and by_planner[0]["after"]["reason"] == "manual"

    campaign = walk(client, f"{API}/audit", admin, entity="campaign", entity_id=str(campaign_id))
    assert [e["action"] for e in campaign] == ["campaign.approve", "campaign.create"]
    assert campaign[0]["before"] == {"status": "draft"}
    assert campaign[0]["after"] == {"status": "approved"}

    start = clock.now - timedelta(hours=1, minutes=30)
    window = walk(
        client,
        f"{API}/audit",
        admin,
        since=start.isoformat(),
        until=(start + timedelta(hours=1)).isoformat(),
    )
    assert [e["action"] for e in window] == ["suppression.add"]
    for params, field in (
        ({"since": "2026-05-08T07:00:00"}, "since"),
        ({"since": clock.now.isoformat(), "until": start.isoformat()}, "since"),
        ({"entity_id": "1"}, "entity"),
    ):
        refused = client.get(f"{API}/audit", params=params, headers=admin)
        assert (refused.status_code, refused.json()["error"]["field"]) == (422, field), params


# --- API keys over HTTP -----------------------------------------------------------------------


def test_admins_create_list_and_revoke_keys_over_http(
    client: TestClient, keys: dict[str, dict[str, str]], engine: Engine
) -> None:
    admin = keys["admin"]
    admin_prefix = admin["Authorization"].split("_")[1]
    created = client.post(
        f"{API}/apikeys",
        json={"role": "district", "area": "440", "name": "TTVH Đức Thọ", "expires_days": 30},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    new = created.json()
    key, prefix = new["key"], new["prefix"]
    assert key.startswith(f"loa_{prefix}_") and new["area_code"] == "440"
    assert new["expires_at"] is not None and new["revoked_at"] is None
    # The new key works, for what a district key may do.
    mine = {"Authorization": f"Bearer {key}"}
    assert client.get(f"{API}/districts/440/plays", headers=mine).status_code == 200
    assert client.get(f"{API}/campaigns", headers=mine).status_code == 403

    listed = walk(client, f"{API}/apikeys", admin, limit=2)
    assert len(listed) == len(Role) + 1
    assert all("key" not in k and "secret_hash" not in k for k in listed)
    assert [k["name"] for k in listed if k["prefix"] == prefix] == ["TTVH Đức Thọ"]
    assert key.split("_", 2)[2] not in client.get(f"{API}/apikeys", headers=admin).text

    revoked = client.post(f"{API}/apikeys/{prefix}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    refused = client.get(f"{API}/districts/440/plays", headers=mine)
    assert refused.status_code == 401 and "was revoked" in refused.json()["error"]["message"]
    assert client.post(f"{API}/apikeys/{prefix}/revoke", headers=admin).status_code == 409
    assert client.post(f"{API}/apikeys/0badc0de/revoke", headers=admin).status_code == 404

    for body, field in (
        ({"role": "district"}, "area"),
        ({"role": "planner", "area": "440"}, "area"),
        ({"role": "root"}, "role"),
        ({"role": "planner", "expires_days": 0}, "expires_days"),
        ({"role": "planner", "secret": "mine"}, "secret"),
    ):
        bad = client.post(f"{API}/apikeys", json=body, headers=admin)
        assert (bad.status_code, bad.json()["error"]["field"]) == (422, field), body
    with session_scope(engine) as session:
        entries = session.execute(
            select(col(AuditEntry.action), col(AuditEntry.actor), col(AuditEntry.entity_id))
            .where(col(AuditEntry.actor) == f"key:{admin_prefix}")
            .order_by(col(AuditEntry.id))
        ).all()
    assert [tuple(e) for e in entries] == [
        ("apikey.create", f"key:{admin_prefix}", prefix),
        ("apikey.revoke", f"key:{admin_prefix}", prefix),
    ]


# --- plays ------------------------------------------------------------------------------------


def test_the_plays_page_and_the_audit_entry_of_a_report(
    client: TestClient,
    keys: dict[str, dict[str, str]],
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
) -> None:
    with session_scope(engine) as session:
        sha = add_audio(session, "bhxh", duration_ms=60_000, now=clock())
    launch_broadcast(engine, settings, clock(), loudspeaker_wave(sha))
    with session_scope(engine) as session:
        item = session.scalars(
            select(col(BroadcastItem.id)).order_by(col(BroadcastItem.id))
        ).first()
    district = keys["district"]
    plays = [
        {
            "item": item,
            "commune": commune,
            "started_at": (clock() - timedelta(minutes=minutes)).isoformat(),
            "ended_at": (clock() - timedelta(minutes=minutes - 1)).isoformat(),
            "result": "played",
        }
        for minutes, commune in ((30, "18301"), (20, "18302"), (10, "18301"))
    ]
    reported = client.post(f"{API}/districts/440/plays", json=plays, headers=district)
    assert reported.status_code == 200 and reported.json()["stored"] == 3
    again = client.post(f"{API}/districts/440/plays", json=plays, headers=district)
    assert again.json() == {"received": 3, "stored": 0, "duplicates": 3}

    listed = walk(client, f"{API}/plays", district, limit=2)
    assert [(p["commune"], p["commune_name"]) for p in listed] == [
        ("18301", "Xã Đức Đồng"),
        ("18302", "Xã Đức Lạng"),
        ("18301", "Xã Đức Đồng"),
    ]
    csv_rows = client.get(f"{API}/plays.csv", headers=district).text.splitlines()[1:]
    assert [row.split(",")[2] for row in csv_rows] == [p["commune"] for p in listed]
    assert walk(client, f"{API}/plays", keys["operator"], district="40") == []
    other = client.get(f"{API}/plays", params={"district": "40"}, headers=district)
    assert other.status_code == 403

    with session_scope(engine) as session:
        entries = session.scalars(
            select(AuditEntry).where(col(AuditEntry.action) == "plays.report")
        ).all()
    district_prefix = district["Authorization"].split("_")[1]
    # One entry for the report that stored plays; the repeat changed nothing.
    assert [(e.actor, e.entity, e.entity_id, (e.after or {})["stored"]) for e in entries] == [
        (f"key:{district_prefix}", "area", "440", 3)
    ]


def test_loa_campaign_edit_replaces_a_drafts_spec(db_url: str, tmp_path: Path) -> None:
    env = loa_env(db_url, tmp_path)
    engine = make_engine(Settings(database_url=db_url, data_dir=tmp_path))
    with session_scope(engine) as session:
        add_areas(session)
    spec = tmp_path / "c.yaml"
    wave = (
        "  - name: Nhắc\n    channel: sms\n    at: '2030-05-08 07:30'\n"
        "    audience: {areas: ['42']}\n"
    )
    spec.write_text(f"name: C\nwaves:\n{wave}    template: 'x'\n", encoding="utf-8")
    run_loa("campaign", "create", str(spec), env=env)
    spec.write_text(f"name: C2\nwaves:\n{wave}    template: 'y'\n{wave}", encoding="utf-8")
    refused = run_loa("campaign", "edit", "1", str(spec), env=env, check=False)
    assert refused.returncode == 1 and "an sms wave needs a template" in refused.stderr
    spec.write_text(f"name: C2\nwaves:\n{wave}    template: 'y'\n", encoding="utf-8")
    edited = run_loa("campaign", "edit", "1", str(spec), env=env)
    assert edited.stdout.strip() == "campaign 1 ('C2') now has 1 wave(s)"
    with session_scope(engine) as session:
        assert [w.body for w in list_waves(session, 1)] == ["y"]
    engine.dispose()
