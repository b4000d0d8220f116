"""The FastAPI application, and the background parts `loa serve` runs beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from api.routes import campaigns, health
from channels.registry import channel_lookup
from loa.clock import Clock, system_clock
from loa.errors import LoaError
from loa.settings import Settings
from scheduler.service import DispatchWorker, SchedulerService


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
        try:
            yield
        finally:
            if worker:
                worker.stop()
            if scheduler:
                scheduler.shutdown()

    app = FastAPI(title="Loa", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine

    @app.exception_handler(LoaError)
    async def _domain_error(_request: Request, exc: LoaError) -> JSONResponse:
        # The one place domain errors become HTTP: a stable code, the message, the field.
        return JSONResponse(
            {"error": {"code": exc.code, "message": exc.message, "field": exc.field}},
            status_code=exc.http_status,
        )

    app.include_router(health.router)
    app.include_router(campaigns.router)
    return app
