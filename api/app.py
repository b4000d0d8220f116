"""The FastAPI application, and the background parts `loa serve` runs beside it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import refuse_nul_characters
from api.errors import ERROR_RESPONSES, LastResort, error_response
from api.limits import BodySizeLimit
from api.metrics import RequestMetrics, metrics_registry
from api.readcache import AreaPaths, Freshness, KeyCache
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
from loa.errors import InvalidInput, LoaError, NotAuthenticated, TooLarge
from loa.models import WorkerKind
from loa.settings import Settings
from scheduler.heartbeat import Heartbeat
from scheduler.service import DispatchWorker, SchedulerService
from web import pages


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
        # Pydantic's "Extra inputs are not permitted" does not say that the name is the problem.
        what = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{source} {where}: {what}" if where else f"{source}: {what}")
        if where:
            fields.append(where)
    return "; ".join(problems), fields[0] if fields else None


def _unreadable_json(cause: BaseException | None) -> str | None:
    if isinstance(cause, UnicodeDecodeError):
        return (
            "the request body is not valid JSON: it is not UTF-8 "
            f"(byte {cause.object[cause.start]:#04x} at position {cause.start})"
        )
    if isinstance(cause, RecursionError):
        return "the request body is not valid JSON for Loa: it is nested too deeply"
    return None


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
        heartbeat = Heartbeat.from_settings(engine, settings, kind=WorkerKind.SERVE, clock=clock)

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

    app = FastAPI(
        title="Loa",
        version="0.1.0",
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul_characters)],
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.clock = clock
    app.state.playlists = PlaylistCache(max_age=settings.playlist_cache_seconds)
    app.state.freshness = Freshness(every=settings.cache_recheck_seconds)
    app.state.api_keys = KeyCache()
    app.state.areas = AreaPaths()
    # The gateways' configuration, validated whole now: a bad file stops the API from starting
    # rather than failing each delivery report.
    app.state.gateways = load_gateways(settings.gateways_file) if settings.gateways_file else {}

    @app.exception_handler(LoaError)
    async def _domain_error(_request: Request, exc: LoaError) -> JSONResponse:
        # The one place domain errors become HTTP: a stable code, the message, the field.
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, NotAuthenticated) else None
        return error_response(exc.http_status, exc.code, exc.message, exc.field, headers)

    @app.exception_handler(RequestValidationError)
    async def _request_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own checks (malformed JSON, a path id that is not a number) answer in the same
        # shape as domain errors, so that a client reads one kind of error body.
        message, field = _request_problems(exc.errors())
        return error_response(422, InvalidInput.code, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and (unreadable := _unreadable_json(exc.__cause__)):
            # FastAPI's answer to a JSON body it could not parse for another reason than its
            # syntax ("There was an error parsing the body"), said as for any body not JSON.
            return error_response(422, InvalidInput.code, unreadable, None)
        # An unknown path or method, a body over LOA_API_MAX_BODY_BYTES: the same shape again.
        code = (
            TooLarge.code
            if exc.status_code == 413
            else HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        )
        return error_response(exc.status_code, code, str(exc.detail), None, exc.headers)

    # The last added is the outermost: the last resort sees every error, the limit every body.
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(LastResort)

    # What /metrics serves: this process's counters and the cluster's figures from the database.
    app.state.metrics = metrics_registry(engine=engine, clock=clock, settings=settings)
    app.add_middleware(RequestMetrics)
    app.include_router(health.router)
    app.include_router(metrics.router)
    for router in (
        campaigns.router,
        segments.router,
        suppressions.router,
        consents.router,
        recipients.router,
        waves.router,
        webhooks.router,
        audio.router,
        deliveries.router,
        gateway_webhooks.router,
        districts.router,
        audit.router,
        apikeys.router,
        stats.router,
    ):
        app.include_router(router, responses=ERROR_RESPONSES)
    pages.mount(app)  # the operator page at /, with /login, /logout and /static
    return app
