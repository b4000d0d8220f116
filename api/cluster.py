"""What /health and /metrics read about the whole cluster from the database, the one place every
machine shares: which processes beat recently, which scheduler leads, and the due queue. Every
query is bounded and index-backed (scheduler/heartbeat.py, scheduler/queue.py): a load balancer
and Prometheus ask for it every few seconds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from loa.db import read_only, session_scope
from loa.settings import Settings
from scheduler.heartbeat import SeenProcess, processes_seen, seen_leader
from scheduler.queue import ChannelQueue, due_queue


@dataclass(frozen=True)
class ClusterView:
    now: datetime
    processes: list[SeenProcess]  # seen within heartbeat_stale_seconds, not stopped
    leader: SeenProcess | None
    queues: dict[str, ChannelQueue]

    def seen(self, kind: str) -> int:
        return sum(1 for p in self.processes if p.kind == kind)


def read_cluster(engine: Engine, *, now: datetime, settings: Settings) -> ClusterView:
    # Read-only: on SQLite it neither waits for nor holds up the writer.
    with session_scope(read_only(engine)) as session:
        processes = processes_seen(
            session, now=now, within_seconds=settings.heartbeat_stale_seconds
        )
        queues = due_queue(session, now=now, settings=settings, limit=settings.queue_count_limit)
    return ClusterView(now, processes, seen_leader(processes), queues)
