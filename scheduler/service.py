"""The long-running parts: the scheduler (APScheduler ticking under a leadership lock) and the
dispatch worker loop. `loa serve` runs both beside the API; `loa scheduler` and `loa worker`
run one each."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, select
from sqlmodel import col

from channels.base import Channel
from loa.clock import Clock
from loa.db import session_scope
from loa.models import Wave, WaveStatus, WorkerKind
from loa.settings import Settings
from scheduler.dispatch import dispatch_once, new_worker_id
from scheduler.heartbeat import Heartbeat
from scheduler.leader import Leadership, leadership_for
from scheduler.reconcile import reconcile_unknown
from scheduler.tick import TickReport, run_tick

if TYPE_CHECKING:
    from broadcast.push import PushTrigger

log = logging.getLogger(__name__)


# How many of the next fire times get a wake-up job of their own; later ones get theirs as the
# earlier ones pass (each tick rebuilds the set).
WAKEUPS_AHEAD = 50


class SchedulerService:
    """APScheduler drives the scheduler; the database holds every wave's state and fire time, so
    a restart or a change of leader loses nothing and never fires a wave twice.

    Two kinds of job: the tick, every `scheduler_tick_seconds`, which does everything (fires due
    waves, makes occurrences, expires, defers, closes); and one wake-up per upcoming fire time
    (a DateTrigger), which runs the tick at that very second instead of up to a tick later. The
    wake-ups are rebuilt from the wave table at start and after every tick, so a launch, a pause
    or a cancel made by any process on any machine is reflected within one tick, and nothing
    lives only in APScheduler's memory.
    """

    def __init__(
        self, engine: Engine, settings: Settings, clock: Clock, leadership: Leadership | None = None
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._leadership = leadership or leadership_for(engine)
        self.heartbeat = Heartbeat.from_settings(
            engine, settings, kind=WorkerKind.SCHEDULER, clock=clock
        )
        self._aps = BackgroundScheduler(timezone=UTC)
        # The tick job and the wake-ups run on APScheduler's thread pool: one at a time. Once
        # stopping, none starts: APScheduler's shutdown holds its job-store lock while it waits
        # for running jobs, so a job that then touched its jobs would wait for ever.
        self._ticking = threading.Lock()
        self._stopping = False
        self._loudspeaker_push: PushTrigger | None = None
        if settings.loudspeaker_endpoints_file is not None:
            # Imported here: broadcast/ imports the scheduler's modules.
            from broadcast.push import PushTrigger

            # In the background: a controller that does not answer must not hold up the tick.
            self._loudspeaker_push = PushTrigger(settings, clock, background=True)

    def tick(self) -> TickReport | None:
        """One tick if this process is the leader; None when another scheduler is active."""
        with self._ticking:
            return self._tick()

    def _tick(self) -> TickReport | None:
        leader = self._leadership.try_acquire()
        # Standbys beat too: /health shows them, and who leads.
        self.heartbeat.beat(is_leader=leader)
        if not leader:
            return None
        return run_tick(
            self._engine,
            now=self._clock(),
            settings=self._settings,
            loudspeaker_push=self._loudspeaker_push,
        )

    def _job(self) -> None:
        """What the tick job and every wake-up run."""
        with self._ticking:
            if self._stopping:
                return
            try:
                self._tick()
                self.sync_wakeups()
            except Exception:  # the next tick retries; a crash must not stop the scheduler
                log.exception("scheduler tick failed")

    def sync_wakeups(self) -> set[str]:
        """One DateTrigger job per upcoming fire time of a scheduled wave (the next
        WAKEUPS_AHEAD); jobs of times no longer wanted are removed. Returns the job ids."""
        with session_scope(self._engine) as session:
            upcoming = session.scalars(
                select(col(Wave.fire_at))
                .where(col(Wave.status) == WaveStatus.SCHEDULED, col(Wave.fire_at) > self._clock())
                .distinct()
                .order_by(col(Wave.fire_at))
                .limit(WAKEUPS_AHEAD)
            ).all()
        wanted = {f"wake:{at.isoformat()}": at for at in upcoming if at is not None}
        for job in self._aps.get_jobs():
            if job.id.startswith("wake:") and job.id not in wanted:
                job.remove()
        for job_id, at in wanted.items():
            if self._aps.get_job(job_id) is None:
                self._aps.add_job(
                    self._job,
                    DateTrigger(run_date=at, timezone=UTC),
                    id=job_id,
                    misfire_grace_time=None,  # late (a busy pool) is better than never
                    replace_existing=True,
                )
        return set(wanted)

    def start(self) -> None:
        self._aps.add_job(
            self._job,
            IntervalTrigger(seconds=self._settings.scheduler_tick_seconds, timezone=UTC),
            id="tick",
            max_instances=1,
            coalesce=True,
            next_run_time=self._clock(),
        )
        self._aps.start()

    def shutdown(self) -> None:
        with self._ticking:
            self._stopping = True
        if self._aps.running:
            self._aps.shutdown(wait=True)
        if self._loudspeaker_push is not None:
            self._loudspeaker_push.close()
        self._leadership.release()
        self.heartbeat.stop()


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
        # One row for the process, whichever of its loops beats: a loop beats between batches,
        # so a process whose every loop is stuck stops being seen.
        self.heartbeat = Heartbeat.from_settings(
            engine, settings, kind=WorkerKind.WORKER, clock=clock, worker_id=self.worker_id
        )

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
        log.info("dispatch loop %s started", loop_id, extra={"worker_id": loop_id})
        next_reconcile = 0.0
        while not self._stop.is_set():
            self.heartbeat.beat()
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
                    # A stop wakes a loop waiting for its rate-limit turn; the turn is given back.
                    sleep=self._stop.wait,
                )
            except Exception:  # e.g. the database restarting: wait and try again
                log.exception("dispatch failed; retrying", extra={"worker_id": loop_id})
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
        self.heartbeat.stop()
