"""The delivery log: filters, keyset pages, the streamed CSV over HTTP and from the CLI, refusals
of bad filters and of keys that may not read it. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from channels.registry import channel_lookup
from loa.apikeys import Role, create_key
from loa.db import session_scope
from loa.models import Suppression
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from scheduler.tick import run_tick
from stats.deliveries import Delivery, DeliveryFilter, export_deliveries, list_deliveries
from tests.builders import add_areas, add_recipient, launch
from tests.clirun import loa_env, run_loa
from tests.conftest import FakeClock

NINE = datetime(2026, 5, 8, 2, 0, tzinfo=UTC)  # 09:00 in Vietnam
# Five in Đức Thọ (commune 18301, under district 440 and province 42), two in Nghệ An (16801).
DUC_THO = [f"+8491200010{i}" for i in range(5)]
NGHE_AN = [f"+8491200020{i}" for i in range(2)]


@pytest.fixture
def sent(engine: Engine, settings: Settings, clock: FakeClock) -> int:
    """A campaign fired and dispatched: six messages sent, one suppressed (the last of Đức Thọ)."""
    with session_scope(engine) as session:
        add_areas(session)
        for phone in DUC_THO:
            add_recipient(session, phone, now=clock(), area="18301")
        for phone in NGHE_AN:
            add_recipient(session, phone, now=clock(), area="16801")
        session.add(Suppression(phone=DUC_THO[-1], reason="opt_out", created_at=clock()))
    spec = {
        "name": "C",
        "waves": [
            {
                "name": "W",
                "channel": "sms",
                "class": "info",
                "at": "2026-05-08 09:00",
                "audience": {"areas": ["42", "40"]},
                "template": "BHXH: {{ name }}",
            }
        ],
    }
    campaign_id = launch(engine, spec, settings, clock())
    clock.now = NINE
    run_tick(engine, now=clock(), settings=settings)
    lookup = channel_lookup(settings)
    while dispatch_once(engine, worker_id="w", clock=clock, settings=settings, channel_for=lookup):
        pass
    return campaign_id


def _phones(items: list[Delivery]) -> list[str]:
    return [item.phone for item in items]


def test_filters_and_keyset_pages(engine: Engine, sent: int) -> None:
    with session_scope(engine) as session:
        everything, end = list_deliveries(session, DeliveryFilter(campaign_id=sent))
        assert end is None
        assert sorted(_phones(everything)) == sorted(DUC_THO + NGHE_AN)
        assert {d.status for d in everything} == {"sent", "suppressed"}

        district, _ = list_deliveries(session, DeliveryFilter(area="440"))
        assert sorted(_phones(district)) == sorted(DUC_THO)
        failed_here, _ = list_deliveries(session, DeliveryFilter(area="440", status="suppressed"))
        assert _phones(failed_here) == [DUC_THO[-1]]
        assert list_deliveries(session, DeliveryFilter(campaign_id=sent + 1))[0] == []
        later, _ = list_deliveries(session, DeliveryFilter(since=datetime(2026, 5, 9, tzinfo=UTC)))
        assert later == []

        # Pages of three: every message once, in id order, and the last page says so.
        seen: list[int] = []
        after: int | None = 0
        while after is not None:
            page, after = list_deliveries(session, DeliveryFilter(), after=after, limit=3)
            assert len(page) <= 3
            seen += [d.id for d in page]
        assert seen == sorted(d.id for d in everything)


def test_the_export_streams_every_row_in_batches(
    engine: Engine, sent: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stats.deliveries

    monkeypatch.setattr(stats.deliveries, "EXPORT_BATCH", 2)  # several batches from 7 rows
    chunks = list(export_deliveries(engine, DeliveryFilter(campaign_id=sent)))
    assert len(chunks) == 1 + 4  # the header, then batches of 2, 2, 2 and 1 rows
    rows = list(csv.DictReader(io.StringIO("".join(chunks))))
    assert sorted(r["phone"] for r in rows) == sorted(DUC_THO + NGHE_AN)
    assert {r["campaign_id"] for r in rows} == {str(sent)}


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine, clock=clock)) as test_client:
        yield test_client


def _key(engine: Engine, clock: FakeClock, role: Role) -> dict[str, str]:
    with session_scope(engine) as session:
        key = create_key(
            session,
            role=role,
            actor="t",
            now=clock(),
            area_code="440" if role == Role.DISTRICT else None,
        ).key
    return {"Authorization": f"Bearer {key}"}


def test_the_api_pages_exports_and_refuses(
    client: TestClient, engine: Engine, clock: FakeClock, sent: int
) -> None:
    operator = _key(engine, clock, Role.OPERATOR)
    first = client.get("/api/v1/deliveries", params={"limit": 4}, headers=operator)
    assert first.status_code == 200, first.text
    body = first.json()
    assert len(body["items"]) == 4 and body["next_after"] == body["items"][-1]["id"]
    rest = client.get(
        "/api/v1/deliveries", params={"after": body["next_after"]}, headers=operator
    ).json()
    assert rest["next_after"] is None
    assert len(body["items"]) + len(rest["items"]) == len(DUC_THO + NGHE_AN)

    export = client.get("/api/v1/deliveries.csv", params={"area": "40"}, headers=operator)
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert sorted(r["phone"] for r in csv.DictReader(io.StringIO(export.text))) == NGHE_AN

    for params, field in [
        ({"status": "lost"}, "status"),
        ({"since": "2026-05-08T07:00:00"}, "since"),
        ({"limit": 0}, "limit"),
        ({"limit": 5000}, "limit"),
        ({"after": -1}, "after"),
    ]:
        refused = client.get("/api/v1/deliveries", params=params, headers=operator)
        assert refused.status_code == 422, (params, refused.text)
        assert field in refused.text
    bad_export = client.get("/api/v1/deliveries.csv", params={"status": "lost"}, headers=operator)
    assert bad_export.status_code == 422

    district = _key(engine, clock, Role.DISTRICT)
    assert client.get("/api/v1/deliveries", headers=district).status_code == 403
    assert client.get("/api/v1/deliveries.csv", headers=district).status_code == 403
    assert client.get("/api/v1/deliveries").status_code == 401


def test_the_cli_exports_to_a_file(db_url: str, tmp_path: Path, sent: int) -> None:
    out = tmp_path / "log.csv"
    env = loa_env(db_url, tmp_path)
    result = run_loa("deliveries", "export", "--status", "suppressed", "--out", str(out), env=env)
    assert "deliveries written to" in result.stdout
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["phone"] for r in rows] == [DUC_THO[-1]]
    assert not (tmp_path / "log.csv.partial").exists()
    refused = run_loa("deliveries", "export", "--status", "lost", env=env, check=False)
    assert refused.returncode != 0 and "status 'lost' is not one of" in refused.stderr
