"""GET /health for load balancers and people: the database (503 when it is not usable), and from
it the cluster: the scheduler leader, the processes seen, the due queue. No API key: a load
balancer has none. It shows no secret: process ids, host names and counts only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from api.cluster import ClusterView, read_cluster
from api.deps import ClockDep, EngineDep, SettingsDep
from loa import schema
from loa.db import check_database
from loa.errors import LoaError
from loa.models import WorkerKind
from scheduler.heartbeat import SeenProcess

router = APIRouter()


def _process(p: SeenProcess, view: ClusterView) -> dict[str, Any]:
    return {
        "id": p.id,
        "kind": p.kind,
        "host": p.host,
        "pid": p.pid,
        "started_at": p.started_at.isoformat(),
        "seen_at": p.seen_at.isoformat(),
        "seen_seconds_ago": round((view.now - p.seen_at).total_seconds(), 3),
    }


def _cluster(view: ClusterView, within: float) -> tuple[dict[str, Any], list[str]]:
    problems = []
    if view.leader is None:
        problems.append(f"no scheduler leader seen in the last {within:g} s: no wave fires")
    if not view.seen(WorkerKind.WORKER):
        problems.append(f"no dispatch worker seen in the last {within:g} s: nothing is sent")
    body = {
        "scheduler": {
            "leader": _process(view.leader, view) if view.leader else "none",
            "standbys": sum(
                1 for p in view.processes if p.kind == WorkerKind.SCHEDULER and not p.is_leader
            ),
        },
        "workers": {
            "within_seconds": within,
            "count": len(view.processes),
            "by_kind": {kind.value: view.seen(kind) for kind in WorkerKind},
            "list": [_process(p, view) for p in view.processes],
        },
        "queue": {
            channel: {
                "due": queue.due,
                "at_least": queue.at_least,
                "oldest_due_at": queue.oldest_due_at.isoformat() if queue.oldest_due_at else None,
                "oldest_age_seconds": round(queue.oldest_age_seconds(view.now), 3),
            }
            for channel, queue in view.queues.items()
        },
    }
    return body, problems


@router.get("/health")
def health(engine: EngineDep, settings: SettingsDep, clock: ClockDep) -> JSONResponse:
    """`ok`; `degraded` (200: the API answers, but no scheduler leads or no worker sends, see
    `problems`); `error` (503) when the database is not usable."""
    database: dict[str, str | None] = {"backend": engine.dialect.name}
    try:
        check_database(engine)
        database["revision"] = schema.require_current(engine)
        database["status"] = "ok"
    except LoaError as exc:
        database["status"] = "error"
        database["error"] = exc.message
    if database["status"] != "ok":
        return JSONResponse({"status": "error", "database": database}, status_code=503)
    try:
        view = read_cluster(engine, now=clock(), settings=settings)
    except SQLAlchemyError as exc:  # the database went away between the two
        database.update(status="error", error=f"reading the cluster failed: {type(exc).__name__}")
        return JSONResponse({"status": "error", "database": database}, status_code=503)
    cluster, problems = _cluster(view, settings.heartbeat_stale_seconds)
    return JSONResponse(
        {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "database": database,
            **cluster,
        }
    )
