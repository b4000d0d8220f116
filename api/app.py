"""The FastAPI application, and the background parts `loa serve` runs beside it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.metrics import RequestMetrics, metrics_registry
from api.routes import (
    apikeys,
    audio,
    audit,
    campaigns,
    consents,
    deliveries,
    districts,
    gateway_webhooks,
    health,
    metrics,
    recipients,
    segments,
    stats,
    suppressions,
    waves,
    webhooks,
)
from broadcast.cache import PlaylistCache
from channels.gateway_config import load_gateways
from channels.registry import channel_lookup
from loa.clock import Clock, system_clock
from loa.errors import InvalidInput, LoaError, NotAuthenticated
from loa.models import WorkerKind
from loa.settings import Settings
from scheduler.dispatch import new_worker_id
from scheduler.heartbeat import Heartbeat
from scheduler.service import DispatchWorker, SchedulerService
from web import pages


def _error(
    status: int,
    code: str,
    message: str,
    field: str | None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "field": field}},
        status_code=status,
        headers=headers,
    )


def _request_problems(errors: Sequence[Any]) -> tuple[str, str | None]:
    """FastAPI's validation errors as one message a person reads (where, then what), and the
    field of the first."""
    problems: list[str] = []
    fields: list[str] = []
    for error in errors:
        source, *rest = [str(part) for part in error["loc"]] or ["request"]
        if error["type"] == "json_invalid":
            problems.append(
                f"the request body is not valid JSON: {error['ctx']['error']} "
                f"at character {rest[-1] if rest else 0}"
            )
            continue
        if error["type"] == "missing" and source == "body" and not rest:
            problems.append("the request has no body; send it as JSON")
            continue
        where = ".".join(rest)
        problems.append(
            f"{source} {where}: {error['msg']}" if where else f"{source}: {error['msg']}"
        )
        if where:
            fields.append(where)
    return "; ".join(problems), fields[0] if fields else None


def create_app(
    settings: Settings,
    engine: Engine,
    *,
    with_worker: bool = False,
    with_scheduler: bool = False,
    clock: Clock = system_clock,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler = SchedulerService(engine, settings, clock) if with_scheduler else None
        worker = (
            DispatchWorker(engine, settings, clock, channel_lookup(settings))
            if with_worker
            else None
        )
        if scheduler:
            scheduler.start()
        if worker:
            worker.start()
        # The API process is seen too: a node behind the load balancer that stops answering
        # drops out of /health's list on every other node.
        heartbeat = Heartbeat(
            engine,
            worker_id=new_worker_id(),
            kind=WorkerKind.SERVE,
            clock=clock,
            every_seconds=settings.heartbeat_seconds,
            forget_after_days=settings.heartbeat_forget_days,
        )

        async def beat() -> None:
            while True:
                await run_in_threadpool(heartbeat.beat)
                await asyncio.sleep(settings.heartbeat_seconds)

        beating = asyncio.create_task(beat())
        try:
            yield
        finally:
            beating.cancel()
            if worker:
                worker.stop()
            if scheduler:
                scheduler.shutdown()
            await run_in_threadpool(heartbeat.stop)

    app = FastAPI(title="Loa", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.clock = clock
    app.state.playlists = PlaylistCache(max_age=settings.playlist_cache_seconds)
    # The gateways' configuration, validated whole now: a bad file stops the API from starting
    # rather than failing each delivery report.
    app.state.gateways = load_gateways(settings.gateways_file) if settings.gateways_file else {}

    @app.exception_handler(LoaError)
    async def _domain_error(_request: Request, exc: LoaError) -> JSONResponse:
        # The one place domain errors become HTTP: a stable code, the message, the field.
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, NotAuthenticated) else None
        return _error(exc.http_status, exc.code, exc.message, exc.field, headers)

    @app.exception_handler(RequestValidationError)
    async def _request_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own checks (malformed JSON, a path id that is not a number) answer in the same
        # shape as domain errors, so that a client reads one kind of error body.
        message, field = _request_problems(exc.errors())
        return _error(422, InvalidInput.code, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # An unknown path or method: the same shape again.
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        return _error(exc.status_code, code, str(exc.detail), None, exc.headers)

    # What /metrics serves: this process's counters and the cluster's figures from the database.
    app.state.metrics = metrics_registry(engine=engine, clock=clock, settings=settings)
    app.add_middleware(RequestMetrics)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(campaigns.router)
    app.include_router(segments.router)
    app.include_router(suppressions.router)
    app.include_router(consents.router)
    app.include_router(recipients.router)
    app.include_router(waves.router)
    app.include_router(webhooks.router)
    app.include_router(audio.router)
    app.include_router(deliveries.router)
    app.include_router(gateway_webhooks.router)
    app.include_router(districts.router)
    app.include_router(audit.router)
    app.include_router(apikeys.router)
    app.include_router(stats.router)
    pages.mount(app)  # the operator page at /, with /login, /logout and /static
    return app
