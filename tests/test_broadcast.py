"""Loudspeaker waves: the spec, the broadcast items launching writes, slot capacity with its
overflow, emergencies at the head, the plan, and the scheduler's handling of them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import col

from broadcast.items import write_items
from broadcast.playlist import district_playlist
from broadcast.slots import SlotEntry, fit_slots
from loa.db import session_scope
from loa.errors import InvalidInput, SpecError
from loa.models import (
    BroadcastItem,
    BroadcastTarget,
    Campaign,
    OutboxMessage,
    Wave,
    WaveStatus,
)
from loa.settings import Settings
from scheduler.lifecycle import create_campaign
from scheduler.plan import plan_campaign
from scheduler.spec import validate_spec
from scheduler.tick import run_tick
from tests.broadcasting import add_audio, launch_broadcast, loudspeaker_wave
from tests.builders import add_areas
from tests.conftest import FakeClock

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
MAY_9 = date(2026, 5, 9)


def _local(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=HCM).astimezone(UTC)


@pytest.fixture
def audio(engine: Engine, clock: FakeClock) -> dict[str, str]:
    """Areas, and three stored files: 20, 15 and 20 minutes long."""
    with session_scope(engine) as session:
        add_areas(session)
        return {
            name: add_audio(session, name, duration_ms=minutes * 60_000, now=clock())
            for name, minutes in (("bhxh", 20), ("bhyt", 15), ("bao-lu", 20))
        }


# --- the spec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"template": "x"}, "field template: a loudspeaker wave plays audio"),
        ({"audio": None}, "field audio: a loudspeaker wave needs audio"),
        ({"audience": {"areas": ["42"], "tags": ["nong-dan"]}}, "field audience: "),
        ({"repeats": 0}, "field repeats: Input should be greater than or equal to 1"),
        ({"priority": "urgent"}, "field priority: Input should be 'normal', 'priority'"),
        (
            {"recurring": None, "relative": {"attribute": "card_expiry", "offset": "-7d"}},
            "field relative: a loudspeaker wave needs at or recurring",
        ),
    ],
)
def test_a_loudspeaker_wave_the_spec_refuses_names_the_wave_and_field(
    extra: dict[str, object], problem: str
) -> None:
    wave = {k: v for k, v in {**loudspeaker_wave("bhxh"), **extra}.items() if v is not None}
    with pytest.raises(SpecError) as refused:
        validate_spec({"name": "C", "waves": [wave]}, source="c.yaml")
    assert "wave 1 ('Phát thanh sáng chiều')" in refused.value.message
    assert problem in refused.value.message


def test_an_sms_wave_with_audio_is_refused() -> None:
    wave = {
        "name": "S",
        "channel": "sms",
        "at": "2026-05-09 08:00",
        "audience": {"areas": ["42"]},
        "template": "x",
        "audio": "bhxh",
        "priority": "emergency",
    }
    with pytest.raises(SpecError, match="field audio, priority: only a loudspeaker wave"):
        validate_spec({"name": "C", "waves": [wave]}, source="c.yaml")


def test_audio_must_be_stored_when_the_campaign_is_created(
    engine: Engine, settings: Settings, clock: FakeClock, audio: dict[str, str]
) -> None:
    spec = validate_spec({"name": "C", "waves": [loudspeaker_wave("khong-co")]}, source="c.yaml")
    with session_scope(engine) as session, pytest.raises(InvalidInput) as refused:
        create_campaign(session, spec=spec, actor="p", now=clock(), settings=settings)
    assert "wave 1 ('Phát thanh sáng chiều'), field audio: no stored audio named 'khong-co'" in (
        refused.value.message
    )
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Campaign)) == 0


# --- launching writes items -------------------------------------------------------------------


def test_launch_writes_one_item_per_slot_and_a_target_per_commune_never_the_outbox(
    engine: Engine, settings: Settings, clock: FakeClock, audio: dict[str, str]
) -> None:
    campaign_id = launch_broadcast(
        engine, settings, clock(), loudspeaker_wave(audio["bhxh"], repeats=2)
    )
    with session_scope(engine) as session:
        items = session.scalars(select(BroadcastItem).order_by(col(BroadcastItem.starts_at))).all()
        assert [(i.local_date, i.slot) for i in items] == [
            (MAY_9, "06:00"),
            (MAY_9, "17:30"),
            (date(2026, 5, 10), "06:00"),
            (date(2026, 5, 10), "17:30"),
        ]
        assert items[0].starts_at == _local(MAY_9, 6)
        assert items[0].valid_until == _local(MAY_9, 6, 30)
        assert {i.repeats for i in items} == {2}
        targets = session.scalars(select(col(BroadcastTarget.commune_code))).all()
        # Province 42's two communes, not Nghệ An's.
        assert sorted(targets) == ["18301"] * 4 + ["18302"] * 4
        wave = session.scalars(select(Wave).where(col(Wave.campaign_id) == campaign_id)).one()
        assert (wave.status, wave.expanded_count) == (WaveStatus.EXPANDED, 8)
        assert wave.fire_at == _local(MAY_9, 6)
        assert wave.expires_at == _local(date(2026, 5, 10), 18)
        # Writing again changes nothing (the UNIQUE keys).
        assert write_items(session, wave, HCM, now=clock(), settings=settings) == 8
        assert session.scalar(select(func.count()).select_from(BroadcastItem)) == 4

    run_tick(engine, now=_local(MAY_9, 6), settings=settings)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
        assert session.get(Campaign, campaign_id).status == "running"  # type: ignore[union-attr]
    run_tick(engine, now=_local(date(2026, 5, 10), 17, 59), settings=settings)
    with session_scope(engine) as session:
        assert session.get(Campaign, campaign_id).status == "running"  # type: ignore[union-attr]
    run_tick(engine, now=_local(date(2026, 5, 10), 18), settings=settings)
    with session_scope(engine) as session:
        assert session.get(Campaign, campaign_id).status == "completed"  # type: ignore[union-attr]


def test_slots_already_past_at_launch_are_not_written(
    engine: Engine, settings: Settings, clock: FakeClock, audio: dict[str, str]
) -> None:
    launch_broadcast(engine, settings, _local(MAY_9, 12), loudspeaker_wave(audio["bhxh"]))
    with session_scope(engine) as session:
        slots = session.scalars(
            select(col(BroadcastItem.starts_at)).order_by(col(BroadcastItem.starts_at))
        ).all()
    assert slots == [
        _local(MAY_9, 17, 30),
        _local(date(2026, 5, 10), 6),
        _local(date(2026, 5, 10), 17, 30),
    ]


# --- capacity and emergencies -----------------------------------------------------------------


def test_a_full_slot_keeps_the_higher_priority_and_reports_the_rest(
    engine: Engine, settings: Settings, clock: FakeClock, audio: dict[str, str]
) -> None:
    one_slot = {"from": "2026-05-09", "to": "2026-05-09", "times": ["06:00"]}
    launch_broadcast(
        engine, settings, clock(), loudspeaker_wave(audio["bhxh"], recurring=one_slot), name="A"
    )
    launch_broadcast(
        engine,
        settings,
        clock(),
        loudspeaker_wave(audio["bhyt"], recurring=one_slot, priority="priority", name="BHYT"),
        name="B",
    )
    with session_scope(engine) as session:
        playlist = district_playlist(
            session, "440", MAY_9, settings=settings, base_url="https://loa.example"
        )
    # 15 min (priority) + 20 min (normal) > 30: the normal item overflows, in both communes.
    assert [(i.title, i.priority, i.communes) for i in playlist.items] == [
        ("BHYT", "priority", ["18301", "18302"])
    ]
    assert [(o.title, o.communes, o.airtime_ms) for o in playlist.overflow] == [
        ("Phát thanh sáng chiều", ["18301", "18302"], 20 * 60_000)
    ]
    assert "06:00 slot (30 min" in playlist.overflow[0].reason
    item = playlist.items[0]
    assert item.audio_url == f"https://loa.example/api/v1/audio/{audio['bhyt']}.mp3"
    assert (item.sha256, item.bytes, item.duration_ms) == (audio["bhyt"], 15 * 240_000, 900_000)
    assert item.start_local == "06:00" and item.starts_at.utcoffset() == timedelta(hours=7)
    assert item.valid_until == _local(MAY_9, 6, 30)

    # A longer slot has room for both, priority first.
    roomy = settings.model_copy(update={"broadcast_slot_minutes": 40})
    with session_scope(engine) as session:
        both = district_playlist(session, "440", MAY_9, settings=roomy, base_url="")
    assert [i.priority for i in both.items] == ["priority", "normal"] and not both.overflow


def test_an_emergency_goes_to_the_head_and_what_it_displaces_is_reported(
    engine: Engine, settings: Settings, clock: FakeClock, audio: dict[str, str]
) -> None:
    launch_broadcast(engine, settings, clock(), loudspeaker_wave(audio["bhxh"]), name="A")
    launch_broadcast(
        engine,
        settings,
        clock(),
        loudspeaker_wave(audio["bhyt"], priority="priority", name="BHYT"),
        name="B",
    )
    # Launched later, on 9 May at 05:30: a flood warning for 06:00, in commune 18302 only.
    flood = loudspeaker_wave(
        audio["bao-lu"],
        name="Cảnh báo lũ",
        priority="emergency",
        recurring=None,
        at="2026-05-09 06:00",
        audience={"areas": ["18302"]},
    )
    del flood["recurring"]
    launch_broadcast(engine, settings, _local(MAY_9, 5, 30), flood, name="E")
    with session_scope(engine) as session:
        playlist = district_playlist(session, "440", MAY_9, settings=settings, base_url="")
    head = playlist.items[0]
    assert (head.title, head.priority, head.play_at_once, head.communes) == (
        "Cảnh báo lũ",
        "emergency",
        True,
        ["18302"],
    )
    # In 18301 the priority item keeps its place; in 18302 the emergency (20 min) leaves room
    # for neither the priority (15) nor the normal (20) item: both reported there.
    six_am = {i.title: i.communes for i in playlist.items if i.start_local == "06:00"}
    assert six_am == {"Cảnh báo lũ": ["18302"], "BHYT": ["18301"]}
    # The evening slot has no emergency: the priority item plays in both communes.
    evening = {i.title: i.communes for i in playlist.items if i.start_local == "17:30"}
    assert evening == {"BHYT": ["18301", "18302"]}
    six = {(o.title, o.start_local): o.communes for o in playlist.overflow}
    assert six[("BHYT", "06:00")] == ["18302"]
    assert six[("Phát thanh sáng chiều", "06:00")] == ["18301", "18302"]
    assert [i.play_at_once for i in playlist.items].count(True) == 1


def test_an_emergency_launched_after_its_time_plays_now(
    engine: Engine, settings: Settings, clock: FakeClock, audio: dict[str, str]
) -> None:
    wave = loudspeaker_wave(audio["bao-lu"], priority="emergency", at="2026-05-08 06:00")
    del wave["recurring"]
    launch_broadcast(engine, settings, clock(), wave)  # 07:00 local on 8 May
    with session_scope(engine) as session:
        item = session.scalars(select(BroadcastItem)).one()
    assert item.starts_at == clock() and item.slot == "07:00"
    # A normal wave whose time has passed is refused instead.
    late = loudspeaker_wave(audio["bhxh"], at="2026-05-08 06:00")
    del late["recurring"]
    with pytest.raises(Exception, match="which has passed"):
        launch_broadcast(engine, settings, clock(), late)


def test_paused_and_cancelled_campaigns_leave_the_playlist(
    engine: Engine, settings: Settings, clock: FakeClock, audio: dict[str, str]
) -> None:
    from scheduler.lifecycle import pause_campaign, resume_campaign

    campaign_id = launch_broadcast(engine, settings, clock(), loudspeaker_wave(audio["bhxh"]))
    with session_scope(engine) as session:
        pause_campaign(session, campaign_id, actor="a", now=clock())
    with session_scope(engine) as session:
        assert not district_playlist(session, "42", MAY_9, settings=settings, base_url="").items
        resume_campaign(session, campaign_id, actor="a", now=clock())
    with session_scope(engine) as session:
        assert (
            len(district_playlist(session, "42", MAY_9, settings=settings, base_url="").items) == 2
        )


# --- the plan ---------------------------------------------------------------------------------


def test_the_plan_counts_slots_and_communes_and_reports_overflow_before_launch(
    engine: Engine, settings: Settings, clock: FakeClock, audio: dict[str, str]
) -> None:
    launch_broadcast(
        engine, settings, clock(), loudspeaker_wave(audio["bhyt"], priority="priority"), name="B"
    )
    spec = validate_spec(
        {"name": "A", "waves": [loudspeaker_wave(audio["bhxh"], repeats=1)]}, source="a.yaml"
    )
    with session_scope(engine) as session:
        campaign = create_campaign(session, spec=spec, actor="p", now=clock(), settings=settings)
        assert campaign.id is not None
        plan = plan_campaign(session, campaign.id, now=clock(), settings=settings)
    wave = plan.waves[0]
    assert wave.broadcast is not None and not wave.refusals and not plan.refused
    assert (wave.occurrences, wave.broadcast.communes, wave.targeted) == (4, 2, 8)
    # Every slot already has the launched 15-minute priority item: 20 more minutes do not fit.
    assert (wave.to_send, wave.broadcast.overflow) == (0, 8)
    assert wave.broadcast.overflow_slots[0].model_dump() == {
        "date": "2026-05-09",
        "slot": "06:00",
        "communes": ["18301", "18302"],
    }
    assert "8 (slot, commune) pair(s) do not fit" in wave.notes[0]


def test_fit_slots_is_greedy_in_priority_order() -> None:
    at = datetime(2026, 5, 1, tzinfo=UTC)

    def entry(item: int, priority: str, minutes: int, ranked: int = 0) -> SlotEntry:
        return SlotEntry(
            item, "c", MAY_9, "06:00", priority, at + timedelta(minutes=ranked), minutes * 60_000, 1
        )

    fitted = fit_slots(
        [
            entry(1, "normal", 10, ranked=0),
            entry(2, "normal", 5, ranked=1),
            entry(3, "emergency", 25, ranked=9),
            entry(4, "priority", 10, ranked=5),
        ],
        30 * 60_000,
    )
    assert [(p.entry.item_id, p.offset_ms) for p in fitted.placed] == [(3, 0), (2, 25 * 60_000)]
    assert [e.item_id for e in fitted.overflow] == [4, 1]
