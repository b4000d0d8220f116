"""Fixtures: every test gets a clean, migrated database, on SQLite always and on PostgreSQL when
LOA_TEST_POSTGRES_URL is set.

Migrating once per session and cloning is what keeps this fast: SQLite copies a template file,
PostgreSQL uses CREATE DATABASE ... TEMPLATE (the approach procrastinate's test suite takes).

With LOA_TEST_STRICT=1 (set by .ci/run) a skipped test, or a run in which no PostgreSQL test
passed, fails the session: a database test that did not run is not a pass.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from loa import schema
from loa.db import make_engine
from loa.settings import Settings

POSTGRES_URL = os.environ.get("LOA_TEST_POSTGRES_URL", "")
STRICT = os.environ.get("LOA_TEST_STRICT") == "1"
BACKENDS = ["sqlite", "postgresql"]


@dataclass
class FakeClock:
    """A clock the test moves by hand."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 5, 8, 0, 0, tzinfo=UTC))


def _pg_admin() -> Engine:
    return create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")


def _pg_url(dbname: str) -> str:
    return make_url(POSTGRES_URL).set(database=dbname).render_as_string(hide_password=False)


def _create_pg_database(name: str, template: str | None = None) -> str:
    admin = _pg_admin()
    with admin.connect() as conn:
        clause = f' TEMPLATE "{template}"' if template else ""
        conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    admin.dispose()
    return _pg_url(name)


def _drop_pg_database(name: str) -> None:
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _migrate(url: str, data_dir: Path) -> None:
    engine = make_engine(Settings(database_url=url, data_dir=data_dir))
    schema.upgrade(engine)
    # Closing the last SQLite connection checkpoints the WAL into the file that gets copied.
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("template")
    path = directory / "template.db"
    _migrate(f"sqlite:///{path}", directory)
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("LOA_TEST_POSTGRES_URL is not set")
    name = f"loa_tpl_{uuid.uuid4().hex[:10]}"
    _migrate(_create_pg_database(name), Path("."))
    yield name
    _drop_pg_database(name)


def _fresh_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a clean migrated database that lives as long as the test."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "loa.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    pg_template_name: str = request.getfixturevalue("pg_template")
    name = f"loa_t_{uuid.uuid4().hex[:12]}"
    url = _create_pg_database(name, template=pg_template_name)
    yield url
    _drop_pg_database(name)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A clean migrated database on each backend."""
    yield from _fresh_database(request.param, request, tmp_path)


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A clean migrated PostgreSQL database, for tests of what only PostgreSQL does (worker
    processes on many machines, advisory locks). Skipped without LOA_TEST_POSTGRES_URL, which
    fails a strict run."""
    if not POSTGRES_URL:
        pytest.skip("LOA_TEST_POSTGRES_URL is not set: this test runs on PostgreSQL only")
    template: str = request.getfixturevalue("pg_template")
    name = f"loa_p_{uuid.uuid4().hex[:12]}"
    url = _create_pg_database(name, template=template)
    yield url
    _drop_pg_database(name)


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no tables) on each backend, for migration tests."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("LOA_TEST_POSTGRES_URL is not set")
    name = f"loa_e_{uuid.uuid4().hex[:12]}"
    yield _create_pg_database(name)
    _drop_pg_database(name)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        data_dir=tmp_path,
        console_sink=tmp_path / "sink.jsonl",
        scheduler_tick_seconds=0.2,
        worker_poll_seconds=0.1,
        # Each request sees the changes a test made just before it; tests/test_readcache.py
        # tests the bound itself.
        cache_recheck_seconds=0,
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    yield engine
    engine.dispose()


# --- strict mode: skipped or missing PostgreSQL tests fail the run ---------------------------

_outcomes: dict[str, int] = {"skipped": 0, "postgres_passed": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _outcomes["skipped"] += 1
    elif report.when == "call" and report.passed and "postgresql" in report.nodeid:
        _outcomes["postgres_passed"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not STRICT or session.config.option.collectonly:
        return
    problems = []
    if _outcomes["skipped"]:
        problems.append(f"{_outcomes['skipped']} test(s) were skipped")
    if not _outcomes["postgres_passed"]:
        problems.append("no PostgreSQL test passed (is LOA_TEST_POSTGRES_URL set and reachable?)")
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("LOA_TEST_STRICT: " + "; ".join(problems), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
