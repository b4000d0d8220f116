"""Leadership: exactly one scheduler is active at a time; others wait as hot standbys.

PostgreSQL: a session-level advisory lock held on a dedicated connection. If the leader's process or
machine dies, the server drops the connection and with it the lock, and a standby takes over on its
next try. No home-made consensus. SQLite: the database is one file on one machine, so an exclusive
lock on a file beside it does the same job for the processes sharing it.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

# An arbitrary constant naming "the Loa scheduler" among the advisory locks of the database.
ADVISORY_LOCK_KEY = 0x10A5C4ED
KEEPALIVES = {"tcp_keepalives_idle": 5, "tcp_keepalives_interval": 2, "tcp_keepalives_count": 3}


class Leadership(Protocol):
    def try_acquire(self) -> bool:
        """True while this process is the leader; tries to become it when it is not."""
        ...

    def release(self) -> None: ...


class PostgresLeadership:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    def try_acquire(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except DBAPIError:
                log.warning("lost the scheduler lock's connection; no longer leader")
                self._drop()
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            # If the leader's machine vanishes, its connection (and the lock) would live on until
            # TCP gives up, which can take hours. Server-side keepalives on this session make the
            # server drop it within idle + interval * count seconds (11 s) instead.
            for name, seconds in KEEPALIVES.items():
                conn.execute(text(f"SET {name} = {seconds}"))
            got = conn.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            ).scalar()
        except DBAPIError:
            conn.close()
            raise
        if got:
            self._conn = conn
            log.info("became the active scheduler")
            return True
        conn.close()
        return False

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
            finally:
                self._conn = None

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
                self._conn.close()
            except DBAPIError:
                pass
            self._conn = None


class FileLeadership:
    def __init__(self, lock_path: Path) -> None:
        self._path = lock_path
        self._file: IO[str] | None = None

    def try_acquire(self) -> bool:
        if self._file is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        f = self._path.open("a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        self._file = f
        log.info("became the active scheduler")
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def leadership_for(engine: Engine) -> Leadership:
    if engine.dialect.name == "postgresql":
        return PostgresLeadership(engine)
    database = engine.url.database or ":memory:"
    return FileLeadership(Path(database + ".scheduler.lock"))
