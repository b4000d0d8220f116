"""Two `loa scheduler` processes on PostgreSQL: one holds the advisory lock; when it is killed
with SIGKILL the other takes over. Real processes and the real lock."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from scheduler.leader import ADVISORY_LOCK_KEY
from tests.clirun import LOA, loa_env


def _lock_holder(url: str, database: str) -> int | None:
    """The pid of the Loa process whose session holds the scheduler's advisory lock, if any
    (each Loa session is named loa:HOST:PID)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            name = conn.execute(
                text(
                    "SELECT a.application_name FROM pg_locks l "
                    "JOIN pg_database d ON d.oid = l.database "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = :db "
                    "AND ((l.classid::bigint << 32) | l.objid::bigint) = :key"
                ),
                {"db": database, "key": ADVISORY_LOCK_KEY},
            ).scalar()
    finally:
        engine.dispose()
    return int(name.rsplit(":", 1)[1]) if name else None


def _wait_for(predicate, seconds: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return None


def test_a_standby_scheduler_takes_over_when_the_leader_is_killed_postgresql(
    pg_url: str, tmp_path: Path
) -> None:
    env = loa_env(pg_url, tmp_path, LOA_SCHEDULER_TICK_SECONDS="0.5")
    database = pg_url.rsplit("/", 1)[1]
    procs = [
        subprocess.Popen(
            [LOA, "scheduler"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"scheduler-{n}.err").open("wb"),
        )
        for n in range(2)
    ]
    try:
        leader_pid = _wait_for(lambda: _lock_holder(pg_url, database), 60)
        assert leader_pid in {p.pid for p in procs}, "no scheduler took the lock"
        leader = next(p for p in procs if p.pid == leader_pid)
        standby = next(p for p in procs if p is not leader)
        leader.send_signal(signal.SIGKILL)
        leader.wait()
        killed_at = time.monotonic()

        new_pid = _wait_for(
            lambda: (pid := _lock_holder(pg_url, database)) != leader_pid and pid, 60
        )
        took = time.monotonic() - killed_at
        assert new_pid == standby.pid, "the standby never took the lock"
        assert standby.poll() is None
        print(f"standby took over {took:.1f} s after the leader was killed")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
