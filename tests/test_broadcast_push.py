"""Pushing playlists and emergencies from the scheduler's tick (broadcast/push.py), against real
HTTP receivers on loopback that check every request with `verify_push`; what each push became
in broadcast_push; and `loa loudspeaker push`.

Decisions run on the injected clock (the tick's `now`); requests are signed on the real clock,
which the receivers check them against."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, select
from sqlmodel import col

from broadcast.push import PushTrigger
from loa.clock import system_clock
from loa.db import session_scope
from loa.models import BroadcastPush
from loa.settings import Settings
from scheduler.lifecycle import pause_campaign, resume_campaign
from scheduler.service import SchedulerService
from scheduler.tick import run_tick
from tests.broadcasting import add_audio, launch_broadcast, loudspeaker_wave
from tests.builders import add_areas
from tests.clirun import loa_env, run_loa
from tests.conftest import FakeClock
from tests.test_loudspeaker_push import SECRET, Receiver, Serve, Sleeps, serve

__all__ = ["serve"]  # the receivers' fixture, used by name

MAY_8, MAY_9 = date(2026, 5, 8), date(2026, 5, 9)
PUBLIC_URL = "http://loa.example.vn"


def _write_endpoints(path: Path, receivers: dict[str, Receiver]) -> Path:
    entries = {code: {"url": r.url, "secret": r.secret} for code, r in receivers.items()}
    path.write_text(yaml.safe_dump({"endpoints": entries}))
    return path


@pytest.fixture
def world(
    engine: Engine, settings: Settings, clock: FakeClock, serve: Serve, tmp_path: Path
) -> dict[str, Any]:
    """Areas (42 > 440 > 18301, 18302; 40 > 16801), one stored audio, and a controller for
    district 440 and one for province 40, each with an endpoint of its own."""
    with session_scope(engine) as session:
        add_areas(session)
        sha = add_audio(session, "bhxh", duration_ms=60_000, now=clock())
    district, province = serve(), serve()
    path = _write_endpoints(tmp_path / "endpoints.yaml", {"440": district, "40": province})
    pushing = settings.model_copy(
        update={
            "loudspeaker_endpoints_file": path,
            "public_url": PUBLIC_URL,
            "loudspeaker_max_attempts": 2,
        }
    )
    sleeps = Sleeps()
    trigger = PushTrigger(pushing, system_clock, sleep=sleeps)
    return {
        "sha": sha,
        "district": district,
        "province": province,
        "settings": pushing,
        "trigger": trigger,
        "sleeps": sleeps,
    }


def _tick(engine: Engine, world: dict[str, Any], now: datetime) -> None:
    run_tick(engine, now=now, settings=world["settings"], loudspeaker_push=world["trigger"])


def _pushes(engine: Engine) -> list[tuple[str, str, date, str, int]]:
    with session_scope(engine) as session:
        return [
            (p.kind, p.area_code, p.local_date, p.outcome, p.attempts)
            for p in session.scalars(select(BroadcastPush).order_by(col(BroadcastPush.id)))
        ]


def _item_communes(pushed: dict[str, Any]) -> list[list[str]]:
    return [item["commune_codes"] for item in pushed["items"]]


def test_a_launch_pushes_the_districts_playlist_once_and_a_pause_pushes_the_change(
    engine: Engine, world: dict[str, Any], clock: FakeClock
) -> None:
    district, province = world["district"], world["province"]
    campaign_id = launch_broadcast(
        engine, world["settings"], clock(), loudspeaker_wave(world["sha"])
    )
    _tick(engine, world, clock())

    # Today (May 8) has nothing and nothing was pushed before: not pushed. Tomorrow has the two
    # slots of May 9 in both communes of 440. Province 40 has nothing at all.
    assert [(p["area"], p["date"], p["emergency"]) for p in district.accepted] == [
        ("440", "2026-05-09", False)
    ]
    (pushed,) = district.accepted
    assert _item_communes(pushed) == [["18301", "18302"], ["18301", "18302"]]
    assert [i["start_local"] for i in pushed["items"]] == ["06:00", "17:30"]
    assert pushed["items"][0]["audio_url"] == f"{PUBLIC_URL}/api/v1/audio/{world['sha']}.mp3"
    assert province.seen == []
    assert _pushes(engine) == [("playlist", "440", MAY_9, "accepted", 1)]

    # Nothing changed: neither the next tick nor a round a push interval later sends anything.
    _tick(engine, world, clock() + timedelta(seconds=2))
    _tick(engine, world, clock() + timedelta(seconds=61))
    assert len(district.seen) == 1
    assert len(_pushes(engine)) == 1

    # Paused: its items leave the playlist, and the emptied playlist is pushed (once).
    with session_scope(engine) as session:
        pause_campaign(session, campaign_id, actor="operator", now=clock() + timedelta(minutes=2))
    _tick(engine, world, clock() + timedelta(minutes=2, seconds=30))
    _tick(engine, world, clock() + timedelta(minutes=4))
    assert [(p["date"], p["items"]) for p in district.accepted[1:]] == [("2026-05-09", [])]

    # Resumed: the items come back, and so does the push.
    with session_scope(engine) as session:
        resume_campaign(session, campaign_id, actor="operator", now=clock() + timedelta(minutes=5))
    _tick(engine, world, clock() + timedelta(minutes=6))
    assert len(district.accepted) == 3
    assert district.accepted[2]["items"] == pushed["items"]
    assert [p[1:4] for p in _pushes(engine)] == [("440", MAY_9, "accepted")] * 3
    assert province.seen == []


def test_the_round_waits_for_the_push_interval(
    engine: Engine, world: dict[str, Any], clock: FakeClock
) -> None:
    _tick(engine, world, clock())  # the first round: nothing to push yet
    launch_broadcast(engine, world["settings"], clock(), loudspeaker_wave(world["sha"]))
    _tick(engine, world, clock() + timedelta(seconds=30))  # changed, but within the 60 s
    assert world["district"].seen == []
    _tick(engine, world, clock() + timedelta(seconds=60))
    assert [p["date"] for p in world["district"].accepted] == ["2026-05-09"]


def test_a_new_local_day_pushes_the_day_after(
    engine: Engine, world: dict[str, Any], clock: FakeClock
) -> None:
    launch_broadcast(engine, world["settings"], clock(), loudspeaker_wave(world["sha"]))
    _tick(engine, world, clock())
    # Local midnight of May 9 (17:00 UTC on May 8): May 10 is now tomorrow.
    _tick(engine, world, datetime(2026, 5, 8, 17, 0, 30, tzinfo=UTC))
    assert [p["date"] for p in world["district"].accepted] == ["2026-05-09", "2026-05-10"]


def test_an_emergency_launch_goes_at_once_to_every_endpoint_of_its_communes(
    engine: Engine, world: dict[str, Any], clock: FakeClock
) -> None:
    district, province = world["district"], world["province"]
    emergency = {
        "name": "Báo lũ",
        "channel": "loudspeaker",
        "at": "2026-05-08 06:00",  # passed: an emergency starts now
        "audience": {"areas": ["18301", "16801"]},
        "audio": world["sha"],
        "priority": "emergency",
    }
    launch_broadcast(engine, world["settings"], clock(), emergency)
    _tick(engine, world, clock())

    # First the emergency, each endpoint with its own commune; then today's playlists, which
    # hold it at their head.
    first_d, first_p = district.accepted[0], province.accepted[0]
    assert (first_d["emergency"], first_d["area"], _item_communes(first_d)) == (
        True,
        "440",
        [["18301"]],
    )
    assert (first_p["emergency"], first_p["area"], _item_communes(first_p)) == (
        True,
        "40",
        [["16801"]],
    )
    assert first_d["items"][0]["play_at_once"] is True
    assert [(p["date"], _item_communes(p)) for p in district.accepted[1:]] == [
        ("2026-05-08", [["18301"]])
    ]
    assert [(p["date"], _item_communes(p)) for p in province.accepted[1:]] == [
        ("2026-05-08", [["16801"]])
    ]
    kinds = sorted(p[:3] for p in _pushes(engine))
    assert kinds == [
        ("emergency", "40", MAY_8),
        ("emergency", "440", MAY_8),
        ("playlist", "40", MAY_8),
        ("playlist", "440", MAY_8),
    ]

    # It went once: later ticks do not send it again.
    _tick(engine, world, clock() + timedelta(seconds=2))
    _tick(engine, world, clock() + timedelta(minutes=2))
    assert (len(district.seen), len(province.seen)) == (2, 2)


def test_an_emergency_push_that_may_succeed_is_repeated_at_the_next_round_to_that_endpoint(
    engine: Engine, world: dict[str, Any], clock: FakeClock
) -> None:
    district, province = world["district"], world["province"]
    district.script = [(503, {}, "busy"), (503, {}, "busy")]  # both attempts of the first push
    emergency = {
        "name": "Báo lũ",
        "channel": "loudspeaker",
        "at": "2026-05-08 06:00",
        "audience": {"areas": ["18301", "16801"]},
        "audio": world["sha"],
        "priority": "emergency",
    }
    launch_broadcast(engine, world["settings"], clock(), emergency)
    _tick(engine, world, clock())
    # The emergency twice (both refused for now), then today's playlist, which holds it.
    assert [seen.verdict for seen in district.seen] == ["scripted 503"] * 2 + ["accepted"]
    assert [seen.verdict for seen in province.seen] == ["accepted"] * 2
    emergencies = [p for p in _pushes(engine) if p[0] == "emergency"]
    assert sorted(emergencies) == [
        ("emergency", "40", MAY_8, "accepted", 1),
        ("emergency", "440", MAY_8, "transient", 2),
    ]

    # A tick before the round is due repeats nothing; the round repeats the district's push
    # only, and the row records it (attempts add up).
    _tick(engine, world, clock() + timedelta(seconds=2))
    assert len(district.seen) == 3
    _tick(engine, world, clock() + timedelta(seconds=61))
    assert len(district.seen) == 4 and len(province.seen) == 2
    assert district.accepted[-1]["items"] == [
        {**province.accepted[0]["items"][0], "commune_codes": ["18301"]}
    ]
    emergencies = [p for p in _pushes(engine) if p[0] == "emergency"]
    assert sorted(emergencies) == [
        ("emergency", "40", MAY_8, "accepted", 1),
        ("emergency", "440", MAY_8, "accepted", 3),
    ]

    # An ambiguous push goes again under the same request id, which a controller that already
    # has it recognises; here found by a scheduler that restarted after it.
    with session_scope(engine) as session:
        row = session.scalars(
            select(BroadcastPush).where(
                col(BroadcastPush.kind) == "emergency", col(BroadcastPush.area_code) == "40"
            )
        ).one()
        row.outcome, request_id = "ambiguous", row.request_id
    world["trigger"] = PushTrigger(world["settings"], system_clock, sleep=world["sleeps"])
    _tick(engine, world, clock() + timedelta(seconds=122))
    again = province.seen[-1]
    assert (again.headers["X-Loa-Request-Id"], again.verdict) == (request_id, "duplicate")
    assert ("emergency", "40", MAY_8, "accepted", 2) in _pushes(engine)


def test_an_emergency_no_endpoint_serves_is_reported_once(
    engine: Engine,
    world: dict[str, Any],
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    province = world["province"]
    only_40 = _write_endpoints(tmp_path / "only-40.yaml", {"40": province})
    settings = world["settings"].model_copy(update={"loudspeaker_endpoints_file": only_40})
    world["trigger"] = PushTrigger(settings, system_clock, sleep=world["sleeps"])
    world["settings"] = settings
    emergency = {
        "name": "Báo lũ",
        "channel": "loudspeaker",
        "at": "2026-05-08 06:00",
        "audience": {"areas": ["18301"]},  # under district 440, which has no endpoint here
        "audio": world["sha"],
        "priority": "emergency",
    }
    launch_broadcast(engine, settings, clock(), emergency)
    with caplog.at_level("WARNING", logger="broadcast.push"):
        for seconds in (0, 61, 122):
            _tick(engine, world, clock() + timedelta(seconds=seconds))
    warnings = [r.getMessage() for r in caplog.records if "no loudspeaker endpoint" in r.message]
    assert warnings == ["emergency item 1: no loudspeaker endpoint serves commune(s) 18301"]
    assert [p for p in _pushes(engine) if p[0] == "emergency"] == []


def test_a_failing_endpoint_is_recorded_and_retried_at_the_next_round(
    engine: Engine, world: dict[str, Any], clock: FakeClock
) -> None:
    district = world["district"]
    district.script = [(503, {}, "busy"), (503, {}, "busy")]  # both attempts of the first round
    launch_broadcast(engine, world["settings"], clock(), loudspeaker_wave(world["sha"]))
    _tick(engine, world, clock())
    assert district.accepted == []
    with session_scope(engine) as session:
        (row,) = session.scalars(select(BroadcastPush)).all()
        assert (row.outcome, row.attempts) == ("transient", 2)
        assert row.reason is not None and "HTTP 503" in row.reason
    assert len(world["sleeps"].waits) == 1  # one backoff between the two attempts

    _tick(engine, world, clock() + timedelta(seconds=61))
    assert [p["date"] for p in district.accepted] == ["2026-05-09"]
    assert _pushes(engine) == [("playlist", "440", MAY_9, "accepted", 3)]


def test_a_refused_push_is_not_retried_until_the_playlist_changes(
    engine: Engine, world: dict[str, Any], clock: FakeClock
) -> None:
    district = world["district"]
    district.script = [(400, {}, "unknown tenant")]
    campaign_id = launch_broadcast(
        engine, world["settings"], clock(), loudspeaker_wave(world["sha"])
    )
    _tick(engine, world, clock())
    assert _pushes(engine) == [("playlist", "440", MAY_9, "permanent", 1)]
    _tick(engine, world, clock() + timedelta(seconds=61))
    assert len(district.seen) == 1

    with session_scope(engine) as session:
        pause_campaign(session, campaign_id, actor="operator", now=clock() + timedelta(minutes=2))
    _tick(engine, world, clock() + timedelta(minutes=3))
    assert [p["items"] for p in district.accepted] == [[]]
    assert [p[3] for p in _pushes(engine)] == ["permanent", "accepted"]


def test_loa_loudspeaker_push(
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    serve: Serve,
    db_url: str,
    tmp_path: Path,
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        sha = add_audio(session, "bhxh", duration_ms=60_000, now=clock())
    launch_broadcast(engine, settings, clock(), loudspeaker_wave(sha))
    district, province = serve(), serve(secret=SECRET)
    path = _write_endpoints(tmp_path / "endpoints.yaml", {"440": district, "40": province})
    env = loa_env(
        db_url, tmp_path, LOA_LOUDSPEAKER_ENDPOINTS_FILE=str(path), LOA_PUBLIC_URL=PUBLIC_URL
    )

    one = run_loa("loudspeaker", "push", "--area", "440", "--date", "2026-05-09", env=env)
    assert one.stdout.splitlines() == [f"440 2026-05-09 accepted (1 attempt) {district.url}"]
    assert _item_communes(district.accepted[0]) == [["18301", "18302"]] * 2

    # Pushed now, changed or not: every area with an endpoint of its own.
    every = run_loa("loudspeaker", "push", "--date", "2026-05-09", env=env)
    assert every.stdout.splitlines() == [
        f"40 2026-05-09 accepted (1 attempt) {province.url}",
        f"440 2026-05-09 accepted (1 attempt) {district.url}",
    ]
    assert province.accepted[0]["items"] == []
    assert len(district.accepted) == 2

    district.script = [(400, {}, "unknown tenant")]
    refused = run_loa(
        "loudspeaker", "push", "--area", "440", "--date", "2026-05-09", env=env, check=False
    )
    assert refused.returncode == 1
    assert "440 2026-05-09 permanent (1 attempt)" in refused.stdout
    assert "unknown tenant" in refused.stdout
    assert "1 of 1 pushes not accepted" in refused.stderr

    unknown = run_loa("loudspeaker", "push", "--area", "99999", env=env, check=False)
    assert unknown.returncode != 0 and "area 99999" in unknown.stderr
    bad_date = run_loa("loudspeaker", "push", "--date", "9 May", env=env, check=False)
    assert bad_date.returncode != 0 and "'9 May' is not a date" in bad_date.stderr
    with session_scope(engine) as session:
        outcomes = session.scalars(
            select(col(BroadcastPush.outcome)).order_by(col(BroadcastPush.id))
        ).all()
    assert outcomes == ["accepted", "accepted", "accepted", "permanent"]


def test_the_scheduler_service_pushes_in_the_background(
    engine: Engine, world: dict[str, Any], clock: FakeClock
) -> None:
    launch_broadcast(engine, world["settings"], clock(), loudspeaker_wave(world["sha"]))
    world["district"].now = clock  # the service signs on its clock, as it decides on it
    service = SchedulerService(engine, world["settings"], clock)
    try:
        assert service.tick() is not None
    finally:
        service.shutdown()  # waits for the push round the tick handed to its thread
    assert [p["date"] for p in world["district"].accepted] == ["2026-05-09"]
    assert _pushes(engine) == [("playlist", "440", MAY_9, "accepted", 1)]


def test_an_unchanged_round_renders_no_playlist(
    engine: Engine, world: dict[str, Any], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import broadcast.playlist
    import broadcast.push

    rendered: list[tuple[str, date]] = []
    real = broadcast.playlist.district_playlist

    def counted(session: Any, code: str, day: date, **kwargs: Any) -> Any:
        rendered.append((code, day))
        return real(session, code, day, **kwargs)

    monkeypatch.setattr(broadcast.push, "district_playlist", counted)
    launch_broadcast(engine, world["settings"], clock(), loudspeaker_wave(world["sha"]))
    _tick(engine, world, clock())
    # A new process's first round renders each pushed area's two days once ...
    assert sorted(rendered) == [("40", MAY_8), ("40", MAY_9), ("440", MAY_8), ("440", MAY_9)]
    # ... and later rounds with the same version key, days and endpoints render none.
    _tick(engine, world, clock() + timedelta(seconds=61))
    _tick(engine, world, clock() + timedelta(seconds=125))
    assert len(rendered) == 4
