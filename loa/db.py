"""Database engines for SQLite (embedded) and PostgreSQL (production); shared column types."""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    Integer,
    Table,
    Text,
    any_,
    bindparam,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session

from loa.errors import DatabaseUnavailable
from loa.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# The SQLSTATEs with which PostgreSQL rolls back one transaction to settle a conflict with
# another: deadlock_detected and serialization_failure. Nothing of the transaction remains, so
# its unit of work can run again from the start.
CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})

# BIGINT primary keys on PostgreSQL; on SQLite only "INTEGER PRIMARY KEY" is the auto rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# The largest value of an INTEGER column (32 bits on PostgreSQL) and of a BIGINT one (64 bits, and
# the most SQLite binds): ids and offsets that come from outside are bounded by them, so that a
# larger one is refused as input rather than overflowing in the driver or the database.
MAX_INTEGER = 2**31 - 1
MAX_BIGINT = 2**63 - 1
# JSONB on PostgreSQL for indexable attributes; JSON text elsewhere.
JsonDoc = JSON().with_variant(JSONB(), "postgresql")
# A list of short strings (a recipient's tags): text[] on PostgreSQL, for its GIN index and its
# array operators (&&, @>); a JSON array as text on SQLite, read with json_each().
TagList = JSON().with_variant(ARRAY(Text()), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored in UTC and always come back timezone-aware.

    SQLite has no time zone support, so without this a naive value would come back and every
    comparison with an aware clock value would raise or, worse, silently shift by the local offset.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: Loa stores only timezone-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def redacted(url: str) -> str:
    """The URL as it is safe to print: without the password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def make_engine(settings: Settings) -> Engine:
    url = settings.database_url
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUnavailable(
            f"LOA_DATABASE_URL={url!r} is not a database URL; use sqlite:///path/loa.db "
            "or postgresql+psycopg://user@host:5432/dbname"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database, settings.sqlite_busy_timeout_ms)
    if parsed.get_backend_name() == "postgresql":
        # Each session names its process, so pg_stat_activity and pg_locks show which Loa
        # process on which machine holds what (the scheduler's lock, a worker's claims).
        name = f"loa:{socket.gethostname()[:40]}:{os.getpid()}"
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=10,
            connect_args={"application_name": name},
        )
    raise DatabaseUnavailable(
        f"LOA_DATABASE_URL uses {parsed.get_backend_name()!r}; Loa supports sqlite and postgresql"
    )


def _sqlite_engine(url: str, database: str | None, busy_timeout_ms: int) -> Engine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that "begin" below is the only BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then writes
        # fails with SQLITE_BUSY at once when another writer got in between, and busy_timeout
        # cannot help it. Several processes (serve, worker, CLI) share one file. A read-only unit
        # of work (read_only()) begins DEFERRED: in WAL mode readers neither wait for the writer
        # nor hold it up, so concurrent pulls of playlists do not queue behind each other.
        deferred = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

    return engine


_READ_ONLY = "loa_read_only"


def read_only(engine: Engine) -> Engine:
    """The same engine (and pool) for units of work that only read: on SQLite they do not take
    the write lock. Nothing stops a write through it; one would fail with SQLITE_BUSY when it
    meets another writer, so use it for reads only."""
    return engine.execution_options(**{_READ_ONLY: True})


def check_database(engine: Engine) -> None:
    """Fail with one clear line when the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(
            f"cannot reach the database {redacted(str(engine.url))}: {reason}"
        ) from None


def upsert_insert(bind: Engine | Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's own INSERT: it has ON CONFLICT DO NOTHING / DO UPDATE, the generic one not."""
    if bind.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def id_in(column: Any, ids: Sequence[int], bind: Engine | Connection) -> ColumnElement[bool]:
    """`column IN ids` for a batch of ids. On PostgreSQL one array parameter (`= ANY(:ids)`):
    a 500-element IN list costs more to render and parse than the statement costs to run."""
    if bind.dialect.name == "postgresql":
        return cast(
            ColumnElement[bool], column == any_(bindparam(None, list(ids), ARRAY(BigInteger())))
        )
    return cast(ColumnElement[bool], column.in_(ids))


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def is_conflict(exc: BaseException) -> bool:
    """Whether the database rolled the transaction back to settle a conflict (a deadlock, a
    serialization failure), so that running it again may succeed."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in CONFLICT_SQLSTATES


def run_transaction(engine: Engine, work: Callable[[Session], T], *, attempts: int = 3) -> T:
    """`work(session)` in one unit of work, run again from the start (a new transaction) when
    the database rolled it back to settle a conflict with another transaction.

    For work whose caller cannot easily try again itself: a provider's delivery report that
    answered 500 would depend on the provider retrying the webhook. The rollup triggers lock
    their rows in key order within one statement, but a transaction of several statements can
    still meet another in a cycle; PostgreSQL then cancels one of the two whole. `work` must
    keep no state across calls (build its results inside)."""
    for attempt in range(1, attempts + 1):
        try:
            with session_scope(engine) as session:
                return work(session)
        except DBAPIError as exc:
            if attempt == attempts or not is_conflict(exc):
                raise
            log.warning(
                "transaction rolled back by the database (%s), running it again (%d of %d)",
                getattr(exc.orig, "sqlstate", "?"),
                attempt + 1,
                attempts,
            )
            # A short random pause, so the two transactions do not meet again in step.
            time.sleep(random.uniform(0, 0.02 * attempt))
    raise AssertionError("unreachable: the last attempt returns or raises")
