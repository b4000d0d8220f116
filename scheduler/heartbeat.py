"""Heartbeats: every long-running process (a dispatch worker, a scheduler, the API of `loa serve`)
keeps one row of the `worker` table up to date, so that /health and /metrics can say, from any
machine, which processes are alive and which scheduler leads.

The database is the only place all machines share, so it is where they are seen. A beat is one
upsert of a tiny table, written at most every `heartbeat_seconds` per process (and at once when a
scheduler gains or loses the leadership); a process that dies stops beating and drops out of the
count after `heartbeat_stale_seconds`, one that stops cleanly says so at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from loa.clock import Clock
from loa.db import session_scope, upsert_insert
from loa.models import Worker, WorkerKind
from loa.settings import Settings
from scheduler.dispatch import new_worker_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeenProcess:
    id: str
    kind: str
    host: str
    pid: int
    started_at: datetime
    seen_at: datetime
    is_leader: bool


def record_beat(
    session: Session,
    *,
    worker_id: str,
    kind: WorkerKind,
    host: str,
    pid: int,
    started_at: datetime,
    is_leader: bool,
    now: datetime,
) -> None:
    """Insert or refresh the process's row. A scheduler that becomes the leader also clears the
    flag of any other: the previous leader may have died with it set."""
    table = Worker.__table__  # type: ignore[attr-defined]
    insert = upsert_insert(session.connection(), table).values(
        id=worker_id,
        kind=kind.value,
        host=host,
        pid=pid,
        started_at=started_at,
        seen_at=now,
        stopped_at=None,
        is_leader=is_leader,
    )
    session.execute(
        insert.on_conflict_do_update(
            index_elements=[table.c.id],
            set_={"seen_at": now, "stopped_at": None, "is_leader": is_leader},
        )
    )
    if is_leader:
        session.execute(
            update(Worker)
            .where(
                col(Worker.kind) == WorkerKind.SCHEDULER,
                col(Worker.is_leader),
                col(Worker.id) != worker_id,
            )
            .values(is_leader=False)
        )


def record_stop(session: Session, *, worker_id: str, now: datetime) -> None:
    session.execute(
        update(Worker)
        .where(col(Worker.id) == worker_id)
        .values(seen_at=now, stopped_at=now, is_leader=False)
    )


def forget_old(session: Session, *, before: datetime) -> int:
    """Delete the rows of processes last seen before `before` (one range of ix_worker_seen_at)."""
    result = session.execute(delete(Worker).where(col(Worker.seen_at) < before))
    return int(result.rowcount)  # type: ignore[attr-defined]


def processes_seen(session: Session, *, now: datetime, within_seconds: float) -> list[SeenProcess]:
    """The processes that beat within the last `within_seconds` and have not stopped, the most
    recently seen first."""
    rows = session.exec(
        select(Worker)
        .where(
            col(Worker.seen_at) >= now - timedelta(seconds=within_seconds),
            col(Worker.stopped_at).is_(None),
        )
        .order_by(col(Worker.seen_at).desc(), col(Worker.id))
    ).all()
    return [
        SeenProcess(w.id, w.kind, w.host, w.pid, w.started_at, w.seen_at, w.is_leader) for w in rows
    ]


def seen_leader(processes: list[SeenProcess]) -> SeenProcess | None:
    """The scheduler that most recently beat as the leader, among processes seen."""
    leaders = [p for p in processes if p.kind == WorkerKind.SCHEDULER and p.is_leader]
    return max(leaders, key=lambda p: p.seen_at, default=None)


class Heartbeat:
    """One process's heartbeat, shared by its threads (a worker's loops all beat through it):
    writes only when `every_seconds` have passed since the last write, or the leadership
    changed. A write that fails is logged and tried again at the next beat: a database that
    cannot take a heartbeat must not stop a worker that may still be sending."""

    def __init__(
        self,
        engine: Engine,
        *,
        worker_id: str,
        kind: WorkerKind,
        clock: Clock,
        every_seconds: float,
        forget_after_days: int,
    ) -> None:
        self.worker_id = worker_id
        self._engine = engine
        self._kind = kind
        self._clock = clock
        self._every = timedelta(seconds=every_seconds)
        self._forget_after = timedelta(days=forget_after_days)
        self._host = socket.gethostname()[:255]
        self._pid = os.getpid()
        self._started_at = clock()
        self._last: datetime | None = None
        self._leader = False
        self._writing = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        engine: Engine,
        settings: Settings,
        *,
        kind: WorkerKind,
        clock: Clock,
        worker_id: str | None = None,
    ) -> Heartbeat:
        """This process's heartbeat as LOA_HEARTBEAT_SECONDS and LOA_HEARTBEAT_FORGET_DAYS say."""
        return cls(
            engine,
            worker_id=worker_id or new_worker_id(),
            kind=kind,
            clock=clock,
            every_seconds=settings.heartbeat_seconds,
            forget_after_days=settings.heartbeat_forget_days,
        )

    def beat(self, *, is_leader: bool = False) -> bool:
        """Write the heartbeat if it is due. True when written."""
        # Another thread writing it right now is this process beating: no need to wait for it.
        if not self._writing.acquire(blocking=False):
            return False
        try:
            now = self._clock()
            due = self._last is None or now - self._last >= self._every
            if not due and is_leader == self._leader:
                return False
            try:
                with session_scope(self._engine) as session:
                    if self._last is None:
                        forget_old(session, before=now - self._forget_after)
                    record_beat(
                        session,
                        worker_id=self.worker_id,
                        kind=self._kind,
                        host=self._host,
                        pid=self._pid,
                        started_at=self._started_at,
                        is_leader=is_leader,
                        now=now,
                    )
            except SQLAlchemyError as exc:
                log.warning(
                    "heartbeat of %s not written: %s",
                    self.worker_id,
                    exc.__class__.__name__,
                    extra={"worker_id": self.worker_id},
                )
                return False
            self._last, self._leader = now, is_leader
            return True
        finally:
            self._writing.release()

    def stop(self) -> None:
        """Say this process has stopped: it is no longer counted, nor shown as the leader."""
        with self._writing:
            try:
                with session_scope(self._engine) as session:
                    record_stop(session, worker_id=self.worker_id, now=self._clock())
            except SQLAlchemyError as exc:
                log.warning(
                    "could not record the stop of %s: %s",
                    self.worker_id,
                    exc.__class__.__name__,
                    extra={"worker_id": self.worker_id},
                )
