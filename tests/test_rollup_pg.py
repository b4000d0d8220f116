"""What the statistics rollup does that only PostgreSQL has: TRUNCATE (SQLite has none) and row
locks that pruning skips. The rest of the rollup's tests run on both databases
(tests/test_rollup.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from loa.db import session_scope
from loa.settings import Settings
from stats.prune import prune_zero_keys
from tests import rollup_scenario
from tests.conftest import FakeClock
from tests.rollup_scenario import assert_exact, stored_rollup


@pytest.fixture
def settings(pg_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=pg_url, data_dir=tmp_path, console_sink=tmp_path / "sink.jsonl")


@pytest.fixture
def lived(engine: Engine, settings: Settings, clock: FakeClock) -> dict[str, int]:
    return rollup_scenario.live_campaigns(engine, rollup_scenario.priced(settings), clock)


def test_a_truncate_of_the_outbox_or_the_plays_empties_their_share_of_the_rollups(
    engine: Engine, lived: dict[str, int]
) -> None:
    """TRUNCATE fires no delete trigger; migration 0016's TRUNCATE triggers clear what the table
    put in each rollup (SQLite has no TRUNCATE)."""
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE outbox"))
    assert_exact(engine)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM stats_rollup_area WHERE n <> 0")) == 2
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE broadcast_play"))
    assert_exact(engine)
    assert stored_rollup(engine) == {}


def test_pruning_skips_a_key_another_transaction_holds_postgresql(
    engine: Engine, lived: dict[str, int]
) -> None:
    """A worker's trigger may be adding to a key at zero: pruning does not wait for its lock
    (a wait could deadlock with the worker's next upsert), it leaves that key for later."""
    zero = (
        "INSERT INTO stats_rollup (wave_id, channel, area_code, carrier, adapter, status, "
        "error_code, hour, n, segments) VALUES (:w, 'sms', :a, 'Viettel', '', 'claimed', '', 1, "
        "0, 0)"
    )
    with engine.connect() as conn:
        wave = conn.scalar(
            text("SELECT min(id) FROM wave WHERE campaign_id = :c"), {"c": lived["sms"]}
        )
    with engine.begin() as conn:
        for area in ("18301", "18302"):
            conn.execute(text(zero), {"w": wave, "a": area})
    with engine.connect() as holder:
        holder.execute(
            text("SELECT 1 FROM stats_rollup WHERE area_code = '18301' AND n = 0 FOR UPDATE")
        )
        with session_scope(engine) as session:
            session.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert prune_zero_keys(session, [wave]) >= 1
        holder.rollback()
    with engine.connect() as conn:
        left = conn.scalars(text("SELECT area_code FROM stats_rollup WHERE n = 0")).all()
    assert left == ["18301"]
