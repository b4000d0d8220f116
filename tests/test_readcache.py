"""The API's in-process caches (api/readcache.py): a warm pull reads nothing from the database; a
revoked key, a moved area and a changed playlist are seen by every app instance (each its own
process in production) once the data's versions are read again, and not before the bound
(LOA_CACHE_RECHECK_SECONDS); an expired key is refused at once; failures are never cached; the
triggers of migration 0015 count exactly the changes the caches must see."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, inspect, select, text, update
from sqlmodel import col

from api.app import create_app
from api.readcache import Freshness, KeyCache, Versions, read_versions
from loa import schema
from loa.apikeys import Caller, Role, create_key, revoke_key, stamp_last_used, verify_key
from loa.db import make_engine, session_scope
from loa.models import ApiKey, Area, Campaign
from loa.settings import Settings
from scheduler.lifecycle import cancel_campaign
from tests import test_playlists_api
from tests.conftest import FakeClock
from tests.test_playlists_api import auth, url

world = test_playlists_api.world  # the same areas, campaigns and keys (a fixture)

TRIGGERS = {
    "cache_generation_api_key_update",
    "cache_generation_api_key_delete",
    "cache_generation_area_insert",
    "cache_generation_area_update",
    "cache_generation_area_delete",
}


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _app(settings: Settings, engine: Engine, clock: FakeClock) -> FastAPI:
    return create_app(settings, engine, clock=clock)


@pytest.fixture
def two(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[list[TestClient]]:
    """Two app instances on one database, as two API processes (LOA_CACHE_RECHECK_SECONDS 0)."""
    with (
        TestClient(_app(settings, engine, clock)) as a,
        TestClient(_app(settings, engine, clock)) as b,
    ):
        yield [a, b]


@pytest.fixture
def slow() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def bounded(
    settings: Settings, engine: Engine, clock: FakeClock, slow: FakeMonotonic
) -> Iterator[TestClient]:
    """One app that trusts the versions it read for 60 s of `slow`, a clock moved by hand."""
    app = _app(settings, engine, clock)
    app.state.freshness = Freshness(every=60, monotonic=slow)
    with TestClient(app) as client:
        yield client


def _generations(engine: Engine) -> tuple[int, int]:
    with session_scope(engine) as session:
        versions = read_versions(session)
    return versions.keys, versions.areas


def _prefix(key: str) -> str:
    return key.split("_")[1]


def test_the_triggers_are_there_at_head(engine: Engine) -> None:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            names = conn.scalars(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))
        else:
            names = conn.scalars(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        assert set(names) >= TRIGGERS


def test_0015_downgrades_and_upgrades(empty_db_url: str, tmp_path: Path) -> None:
    from alembic import command

    engine = make_engine(Settings(database_url=empty_db_url, data_dir=tmp_path))
    config = schema._alembic_config()
    schema.upgrade(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0014")
    assert "cache_generation" not in inspect(engine).get_table_names()
    with session_scope(engine) as session:  # no trigger is left to write to the dropped table
        session.add(Area(code="42", name="Hà Tĩnh", level="province", path="/42/"))
    schema.upgrade(engine)
    with session_scope(engine) as session:
        session.execute(update(Area).values(name="Tỉnh Hà Tĩnh"))
    assert _generations(engine)[1] >= 1
    engine.dispose()


def test_the_generations_move_on_what_the_caches_must_see(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        session.add(Area(code="42", name="Hà Tĩnh", level="province", path="/42/"))
    keys, areas = _generations(engine)
    assert areas >= 1
    with session_scope(engine) as session:
        key = create_key(session, role=Role.OPERATOR, actor="t", now=clock()).key
    with session_scope(engine) as session:  # the last-use stamp, both ways it is written
        caller = verify_key(session, key, now=clock.advance(minutes=2))
        stamp_last_used(session, caller.key_id, now=clock.advance(minutes=2))
    assert _generations(engine) == (keys, areas)  # a new key, a stamp: no cache holds them
    with session_scope(engine) as session:
        revoke_key(session, _prefix(key), actor="t", now=clock())
    assert _generations(engine) == (keys + 1, areas)
    with session_scope(engine) as session:
        session.execute(update(Area).where(col(Area.code) == "42").values(name="Tỉnh Hà Tĩnh"))
    assert _generations(engine) == (keys + 1, areas + 1)
    with session_scope(engine) as session:
        session.execute(update(ApiKey).values(expires_at=clock()))
    assert _generations(engine) == (keys + 2, areas + 1)


def test_a_warm_pull_reads_nothing_from_the_database(
    bounded: TestClient, world: dict[str, str], engine: Engine
) -> None:
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(args[2])

    first = bounded.get(url("18301"), headers=auth(world["440"]))
    assert first.status_code == 200
    event.listen(engine, "before_cursor_execute", seen)
    try:
        again = bounded.get(url("18301"), headers=auth(world["440"]))
        cold = bounded.get(url("18302"), headers=auth(world["440"]))  # not cached yet
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    assert cold.status_code == 200
    # Only the other commune's playlist was read (its area and its items): no key, no version.
    assert statements and not any("api_key" in s or "cache_generation" in s for s in statements)
    assert len(statements) < 6


def test_a_revoked_key_is_refused_by_every_instance(
    two: list[TestClient], world: dict[str, str]
) -> None:
    a, b = two
    for client in two:
        assert client.get(url("440"), headers=auth(world["440"])).status_code == 200
    revoked = a.post(
        f"/api/v1/apikeys/{_prefix(world['440'])}/revoke", headers=auth(world["admin"])
    )
    assert revoked.status_code == 200, revoked.text
    for client in (b, a):
        refused = client.get(url("440"), headers=auth(world["440"]))
        assert refused.status_code == 401
        assert "was revoked" in refused.json()["error"]["message"]
    # The other keys were cached again, and still work.
    assert b.get(url("40"), headers=auth(world["40"])).status_code == 200


def test_a_changed_playlist_is_seen_by_every_instance(
    two: list[TestClient], world: dict[str, str], engine: Engine, clock: FakeClock
) -> None:
    a, b = two
    before = [client.get(url("440"), headers=auth(world["440"])) for client in two]
    assert before[0].headers["etag"] == before[1].headers["etag"]
    _cancel(engine, clock)
    for client in (b, a):
        after = client.get(url("440"), headers=auth(world["440"]))
        assert after.json()["items"] == [] and after.headers["etag"] != before[0].headers["etag"]


def test_a_moved_area_changes_who_may_read_it(
    two: list[TestClient], world: dict[str, str], engine: Engine
) -> None:
    a, b = two
    assert a.get(url("18302"), headers=auth(world["440"])).status_code == 200
    assert b.get(url("18302"), headers=auth(world["40"])).status_code == 403
    with session_scope(engine) as session:  # to another province, as an import would move it
        session.execute(
            update(Area)
            .where(col(Area.code) == "18302")
            .values(parent_code="40", path="/40/18302/")
        )
    assert a.get(url("18302"), headers=auth(world["440"])).status_code == 403
    assert b.get(url("18302"), headers=auth(world["40"])).status_code == 200


def test_the_bound_changes_are_seen_once_the_versions_are_read_again(
    bounded: TestClient,
    world: dict[str, str],
    engine: Engine,
    clock: FakeClock,
    slow: FakeMonotonic,
) -> None:
    """Within LOA_CACHE_RECHECK_SECONDS of the last read a process answers from what it read
    (the stated bound); the first request after it reads the versions again."""
    first = bounded.get(url("440"), headers=auth(world["440"]))
    with session_scope(engine) as session:
        revoke_key(session, _prefix(world["440"]), actor="t", now=clock())
    _cancel(engine, clock)
    slow.now += 59
    stale = bounded.get(url("440"), headers=auth(world["440"]))
    assert stale.status_code == 200 and stale.content == first.content
    slow.now += 1
    assert bounded.get(url("440"), headers=auth(world["440"])).status_code == 401
    fresh = bounded.get(url("440"), headers=auth(world["operator"]))
    assert fresh.json()["items"] == [] and fresh.headers["etag"] != first.headers["etag"]


def test_an_expired_key_is_refused_at_once_and_refusals_are_not_cached(
    bounded: TestClient, world: dict[str, str], engine: Engine, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        expiring = create_key(
            session,
            role=Role.DISTRICT,
            actor="t",
            now=clock(),
            area_code="440",
            expires_in=timedelta(hours=1),
        ).key
    assert bounded.get(url("440"), headers=auth(expiring)).status_code == 200
    clock.advance(hours=1)
    refused = bounded.get(url("440"), headers=auth(expiring))
    assert refused.status_code == 401 and "expired" in refused.json()["error"]["message"]
    wrong = f"{expiring[:-4]}xxxx"
    assert bounded.get(url("440"), headers=auth(world["440"])).status_code == 200
    for _ in range(2):
        assert bounded.get(url("440"), headers=auth(wrong)).status_code == 401


def test_requests_that_find_the_versions_old_share_one_read(engine: Engine) -> None:
    reads: list[Versions] = []

    class Counted(Freshness):
        def read(self, engine: Engine) -> Versions:
            reads.append(super().read(engine))
            return reads[-1]

    slow = FakeMonotonic()
    freshness = Counted(every=60, monotonic=slow)

    async def requests(n: int) -> list[Versions]:
        return list(await asyncio.gather(*(freshness.current(engine) for _ in range(n))))

    assert asyncio.run(requests(20)) == reads * 20 and len(reads) == 1
    assert asyncio.run(requests(5)) == reads * 5 and len(reads) == 1  # still fresh
    slow.now += 60
    asyncio.run(requests(5))
    assert len(reads) == 2


def test_the_versions_are_read_again_behind_the_requests_past_half_their_age(
    engine: Engine,
) -> None:
    reads: list[Versions] = []

    class Counted(Freshness):
        def read(self, engine: Engine) -> Versions:
            reads.append(super().read(engine))
            return reads[-1]

    slow = FakeMonotonic()
    freshness = Counted(every=60, monotonic=slow)

    async def settle() -> None:  # the reads started and not awaited
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))

    async def requests() -> None:
        first = await freshness.current(engine)
        slow.now += 29
        assert await freshness.current(engine) is first
        await settle()
        assert len(reads) == 1  # under half their age: not read
        slow.now += 1
        assert await freshness.current(engine) is first  # answered from what it held...
        await settle()
        assert len(reads) == 2  # ...and read again behind it
        slow.now += 59  # 89 s after the first read, 59 s after the second
        assert await freshness.current(engine) is reads[1]
        await settle()
        assert len(reads) == 3

    asyncio.run(requests())


def test_the_cache_stamps_last_use_once_a_minute(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        session.add(Area(code="42", name="Hà Tĩnh", level="province", path="/42/"))
        key = create_key(session, role=Role.OPERATOR, actor="t", now=clock()).key
    with session_scope(engine) as session:
        caller = verify_key(session, key, now=clock())
    cache = KeyCache()
    cache.remember(key, caller, now=clock(), generation=3)

    def lookup(generation: int = 3) -> tuple[Caller, bool]:
        return cache.lookup(key, now=clock(), generation=generation)

    assert lookup() == (caller, False)
    clock.advance(seconds=59)
    assert lookup() == (caller, False)
    clock.advance(seconds=1)
    assert lookup() == (caller, True)
    assert lookup() == (caller, False)  # counted as written: one stamp a minute
    with pytest.raises(KeyError):
        lookup(generation=4)
    with pytest.raises(KeyError):
        cache.lookup(key.replace("_", "x", 1), now=clock(), generation=3)

    def stamped() -> object:
        with session_scope(engine) as session:
            return session.scalar(select(col(ApiKey.last_used_at)))

    with session_scope(engine) as session:  # due: the last stamp is a minute old
        stamp_last_used(session, caller.key_id, now=clock())
    first = stamped()
    assert first == clock()
    with session_scope(engine) as session:  # as another process would: a stamp 30 s old holds
        stamp_last_used(session, caller.key_id, now=clock.advance(seconds=30))
    assert stamped() == first
    with session_scope(engine) as session:
        stamp_last_used(session, caller.key_id, now=clock.advance(seconds=30))
    assert stamped() == clock()


def _cancel(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        campaign_id = session.scalar(select(col(Campaign.id)).where(col(Campaign.name) == "C"))
        assert campaign_id is not None
        clock.advance(seconds=1)
        cancel_campaign(session, campaign_id, actor="t", now=clock())
