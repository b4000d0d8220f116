"""The scheduler service as it runs in `loa scheduler`: APScheduler jobs rebuilt from the wave
table, and a wave fired at its own second by its wake-up job rather than at the next tick."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from loa.clock import system_clock
from loa.db import session_scope
from loa.models import Wave, WaveStatus
from loa.settings import Settings
from scheduler.lifecycle import cancel_campaign
from scheduler.service import SchedulerService
from tests.builders import add_areas, add_recipient, launch

HCM = ZoneInfo("Asia/Ho_Chi_Minh")


def _wave_status(engine: Engine) -> str:
    with session_scope(engine) as session:
        wave = session.get(Wave, 1)
        assert wave is not None
        return wave.status


def test_a_wave_fires_by_its_wake_up_job_long_before_the_next_tick(
    engine: Engine, settings: Settings
) -> None:
    # One tick at start, the next an hour later: only the wake-up can fire the wave in time.
    settings = settings.model_copy(update={"scheduler_tick_seconds": 3600})
    with session_scope(engine) as session:
        add_areas(session)
        add_recipient(session, "+84912000001", now=system_clock())
    fire_local = datetime.now(HCM) + timedelta(seconds=3)
    launch(
        engine,
        {
            "name": "C",
            "waves": [
                {
                    "name": "W",
                    "channel": "sms",
                    "at": fire_local.strftime("%Y-%m-%d %H:%M:%S"),
                    "audience": {"areas": ["42"]},
                    "template": "x",
                    "window": "always",
                }
            ],
        },
        settings,
        system_clock(),
    )
    service = SchedulerService(engine, settings, system_clock)
    service.start()
    try:
        deadline = time.monotonic() + 30
        while _wave_status(engine) != WaveStatus.EXPANDED and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _wave_status(engine) == WaveStatus.EXPANDED
    finally:
        service.shutdown()


def test_wake_ups_follow_the_wave_table(engine: Engine, settings: Settings) -> None:
    with session_scope(engine) as session:
        add_areas(session)
    now = system_clock()
    later = (now + timedelta(days=2)).astimezone(HCM).strftime("%Y-%m-%d %H:%M")
    wave = {"name": "W", "channel": "sms", "audience": {"areas": ["42"]}, "template": "x"}
    first = launch(engine, {"name": "A", "waves": [{**wave, "at": later}]}, settings, now)
    service = SchedulerService(engine, settings, system_clock)
    try:
        jobs = service.sync_wakeups()
        assert len(jobs) == 1
        with session_scope(engine) as session:
            cancel_campaign(session, first, actor="a", now=system_clock())
        assert service.sync_wakeups() == set()
    finally:
        service.shutdown()
