"""The long-running parts: the scheduler (APScheduler ticking under a leadership lock) and the
dispatch worker loop. `loa serve` runs both beside the API; `loa scheduler` and `loa worker`
run one each."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from channels.base import Channel
from loa.clock import Clock
from loa.settings import Settings
from scheduler.dispatch import dispatch_once, new_worker_id
from scheduler.leader import Leadership, leadership_for
from scheduler.reconcile import reconcile_unknown
from scheduler.tick import TickReport, run_tick

log = logging.getLogger(__name__)


class SchedulerService:
    """APScheduler drives the tick; the database holds every wave's state and fire time, so a
    restart or a change of leader loses nothing and never fires a wave twice."""

    def __init__(
        self, engine: Engine, settings: Settings, clock: Clock, leadership: Leadership | None = None
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._leadership = leadership or leadership_for(engine)
        self._aps = BackgroundScheduler(timezone=UTC)

    def tick(self) -> TickReport | None:
        """One tick if this process is the leader; None when another scheduler is active."""
        if not self._leadership.try_acquire():
            return None
        return run_tick(self._engine, now=self._clock(), settings=self._settings)

    def _safe_tick(self) -> None:
        try:
            self.tick()
        except Exception:  # the next tick retries; a crash here must not stop the scheduler thread
            log.exception("scheduler tick failed")

    def start(self) -> None:
        self._aps.add_job(
            self._safe_tick,
            IntervalTrigger(seconds=self._settings.scheduler_tick_seconds, timezone=UTC),
            id="tick",
            max_instances=1,
            coalesce=True,
            next_run_time=self._clock(),
        )
        self._aps.start()

    def shutdown(self) -> None:
        if self._aps.running:
            self._aps.shutdown(wait=True)
        self._leadership.release()


class DispatchWorker:
    """Claims and sends batches until stopped, in `worker_loops` threads (one on SQLite); each
    loop sleeps only when nothing is due. The loops overlap database work with sending: both
    release the GIL while they wait."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        clock: Clock,
        channel_for: Callable[[str], Channel],
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._channel_for = channel_for
        self.worker_id = new_worker_id()
        loops = 1 if engine.dialect.name == "sqlite" else settings.worker_loops
        # Each loop holds its own leases, so each has its own owner id.
        self.loop_ids = [f"{self.worker_id}/{n}" for n in range(loops)]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _reconcile(self) -> None:
        try:
            reconcile_unknown(
                self._engine,
                channel_for=self._channel_for,
                now=self._clock(),
                settings=self._settings,
            )
        except Exception:  # a channel that cannot answer now is asked again later
            log.exception("reconciliation failed; retrying later")

    def run(self, loop_id: str, *, reconciles: bool) -> None:
        log.info("dispatch loop %s started", loop_id)
        next_reconcile = 0.0
        while not self._stop.is_set():
            if reconciles and time.monotonic() >= next_reconcile:
                next_reconcile = time.monotonic() + self._settings.reconcile_seconds
                self._reconcile()
            try:
                claimed = dispatch_once(
                    self._engine,
                    worker_id=loop_id,
                    clock=self._clock,
                    settings=self._settings,
                    channel_for=self._channel_for,
                )
            except Exception:  # e.g. the database restarting: wait and try again
                log.exception("dispatch failed; retrying")
                claimed = 0
            if not claimed:
                self._stop.wait(self._settings.worker_poll_seconds)

    def start(self) -> None:
        for n, loop_id in enumerate(self.loop_ids):
            thread = threading.Thread(
                target=self.run,
                args=(loop_id,),
                kwargs={"reconciles": n == 0},
                name=f"dispatch-{n}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
