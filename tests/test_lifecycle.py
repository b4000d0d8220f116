"""Campaign lifecycle: every legal transition with its audit entry, every illegal one refused
without a trace, four-eyes approval, and what pause, resume and cancel do to waves and messages.
On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from sqlmodel import col

from channels.registry import channel_lookup
from loa.db import session_scope
from loa.errors import Conflict
from loa.models import (
    AuditEntry,
    Campaign,
    CampaignStatus,
    DeliveryEvent,
    MessageStatus,
    OutboxMessage,
    Suppression,
    Wave,
    WaveStatus,
)
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from scheduler.lifecycle import (
    approve_campaign,
    cancel_campaign,
    create_campaign,
    launch_campaign,
    pause_campaign,
    resume_campaign,
)
from scheduler.spec import validate_spec
from scheduler.tick import run_tick
from stats.campaign import campaign_stats
from tests.builders import add_areas, add_recipient, launch
from tests.clirun import loa_env, run_loa
from tests.conftest import FakeClock

SPEC: dict[str, Any] = {
    "name": "Tháng vận động BHXH 2026",
    "timezone": "Asia/Ho_Chi_Minh",
    "waves": [
        {
            "name": "Lễ ra quân",
            "channel": "sms",
            "class": "info",
            "at": "2026-05-08 07:30",  # 00:30 UTC
            "audience": {"areas": ["42"]},
            "template": "BHXH: {{ name }} oi, thang 5 la Thang van dong BHXH toan dan.",
        },
        {
            "name": "Nhắc lại",
            "channel": "sms",
            "class": "care",
            "at": "2026-05-09 07:30",  # a day later
            "audience": {"areas": ["42"]},
            "template": "BHXH: {{ name }} oi, dung quen tham gia BHXH tu nguyen.",
        },
    ],
}
FIRST_FIRE = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)
SECOND_FIRE = datetime(2026, 5, 9, 0, 30, tzinfo=UTC)
PHONES = [f"+8491200000{i}" for i in range(1, 8)]


@pytest.fixture(autouse=True)
def people(engine: Engine, clock: FakeClock) -> None:
    """Seven people in the campaign's province; the last one opted out."""
    with session_scope(engine) as session:
        add_areas(session)
        for phone in PHONES:
            add_recipient(session, phone, now=clock(), area="18301")
        session.add(Suppression(phone=PHONES[-1], reason="opt_out", created_at=clock()))


# --- helpers ----------------------------------------------------------------------------------


def _create(engine: Engine, settings: Settings, clock: FakeClock, *, actor: str = "planner") -> int:
    with session_scope(engine) as session:
        campaign = create_campaign(
            session,
            spec=validate_spec(SPEC, source="test"),
            actor=actor,
            now=clock(),
            settings=settings,
        )
    assert campaign.id is not None
    return campaign.id


def _fire_first_wave(engine: Engine, settings: Settings, clock: FakeClock) -> None:
    clock.now = FIRST_FIRE
    small_chunks = settings.model_copy(update={"expansion_chunk_size": 3})
    assert list(run_tick(engine, now=clock(), settings=small_chunks).fired.values()) == [
        len(PHONES)
    ]


def _dispatch_all(engine: Engine, settings: Settings, clock: FakeClock) -> None:
    lookup = channel_lookup(settings)
    while dispatch_once(engine, worker_id="w", clock=clock, settings=settings, channel_for=lookup):
        pass


def _campaign_in(state: str, engine: Engine, settings: Settings, clock: FakeClock) -> int:
    """A campaign brought to `state` the way it really gets there (`paused-fired`: paused after
    its first wave fired)."""
    if state in ("draft", "approved", "cancelled"):
        campaign_id = _create(engine, settings, clock)
        with session_scope(engine) as session:
            if state == "approved":
                approve_campaign(
                    session, campaign_id, actor="approver", now=clock(), settings=settings
                )
            if state == "cancelled":
                cancel_campaign(session, campaign_id, actor="planner", now=clock())
        return campaign_id
    campaign_id = launch(engine, SPEC, settings, clock())
    if state in ("running", "paused-fired", "completed"):
        _fire_first_wave(engine, settings, clock)
    if state in ("paused", "paused-fired"):
        with session_scope(engine) as session:
            pause_campaign(session, campaign_id, actor="operator", now=clock())
    if state == "completed":
        _dispatch_all(engine, settings, clock)
        clock.now = SECOND_FIRE
        run_tick(engine, now=clock(), settings=settings)
        _dispatch_all(engine, settings, clock)
        assert run_tick(engine, now=clock(), settings=settings).campaigns_completed == [campaign_id]
    with session_scope(engine) as session:
        status = session.get(Campaign, campaign_id).status  # type: ignore[union-attr]
    assert status == state.removesuffix("-fired")
    return campaign_id


def _verb(
    verb: str,
    engine: Engine,
    campaign_id: int,
    *,
    actor: str,
    now: datetime,
    settings: Settings,
) -> None:
    with session_scope(engine) as session:
        if verb == "approve":
            approve_campaign(session, campaign_id, actor=actor, now=now, settings=settings)
        elif verb == "launch":
            launch_campaign(session, campaign_id, actor=actor, now=now, settings=settings)
        elif verb == "pause":
            pause_campaign(session, campaign_id, actor=actor, now=now)
        elif verb == "resume":
            resume_campaign(session, campaign_id, actor=actor, now=now)
        elif verb == "cancel":
            cancel_campaign(session, campaign_id, actor=actor, now=now)
        else:
            raise AssertionError(verb)


def _snapshot(engine: Engine, campaign_id: int) -> dict[str, Any]:
    """Everything a transition may touch."""
    with session_scope(engine) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        return {
            "campaign": (campaign.status, campaign.updated_at, campaign.approved_by),
            "audit": session.execute(
                select(col(AuditEntry.id), col(AuditEntry.action)).order_by(col(AuditEntry.id))
            ).all(),
            "waves": session.execute(
                select(col(Wave.id), col(Wave.status), col(Wave.fire_at)).order_by(col(Wave.id))
            ).all(),
            "outbox": session.execute(
                select(col(OutboxMessage.id), col(OutboxMessage.status)).order_by(
                    col(OutboxMessage.id)
                )
            ).all(),
            "events": session.scalar(select(func.count()).select_from(DeliveryEvent)),
        }


def _last_audit(engine: Engine, campaign_id: int) -> AuditEntry:
    with session_scope(engine) as session:
        entry = session.scalars(
            select(AuditEntry)
            .where(col(AuditEntry.entity_id) == str(campaign_id))
            .order_by(col(AuditEntry.id).desc())
            .limit(1)
        ).one()
    return entry


@contextmanager
def _only_due(engine: Engine, clock: FakeClock, count: int) -> Iterator[list[int]]:
    """Leave only the first `count` planned messages claimable; park the rest under another lease.

    So that "send two" or "a worker holds one" does not rely on a claim honouring its batch limit.
    """
    with session_scope(engine) as session:
        planned = [
            i
            for i in session.scalars(
                select(col(OutboxMessage.id))
                .where(col(OutboxMessage.status) == MessageStatus.PLANNED)
                .order_by(col(OutboxMessage.id))
            )
            if i is not None
        ]
        session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.id).in_(planned[count:]))
            .values(
                status=MessageStatus.CLAIMED,
                lease_owner="parked",
                lease_expires_at=clock() + timedelta(days=30),
            )
        )
    yield planned[:count]
    with session_scope(engine) as session:
        session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.lease_owner) == "parked")
            .values(status=MessageStatus.PLANNED, lease_owner=None, lease_expires_at=None)
        )


def _send(engine: Engine, settings: Settings, clock: FakeClock, count: int) -> set[int]:
    """Send the first `count` planned messages through the console channel; return their ids."""
    lookup = channel_lookup(settings)
    with _only_due(engine, clock, count) as chosen:
        sent = dispatch_once(
            engine, worker_id="w1", clock=clock, settings=settings, channel_for=lookup
        )
    assert sent == count
    return set(chosen)


def _sink_phones(settings: Settings) -> list[str]:
    assert settings.console_sink is not None
    if not settings.console_sink.exists():
        return []
    lines = settings.console_sink.read_text("utf-8").splitlines()
    return [str(json.loads(line)["to"]) for line in lines]


# --- the transition table ---------------------------------------------------------------------

STATES = ["draft", "approved", "scheduled", "running", "paused", "completed", "cancelled"]
LEGAL_FROM = {
    "approve": {"draft"},
    "launch": {"approved"},
    "pause": {"scheduled", "running"},
    "resume": {"paused"},
    "cancel": {"draft", "approved", "scheduled", "running", "paused"},
}
LEGAL = [
    ("approve", "draft", "approved"),
    ("launch", "approved", "scheduled"),
    ("pause", "scheduled", "paused"),
    ("pause", "running", "paused"),
    ("resume", "paused", "scheduled"),  # paused before any wave fired
    ("resume", "paused-fired", "running"),
    *(("cancel", state, "cancelled") for state in sorted(LEGAL_FROM["cancel"])),
]
ILLEGAL = [
    (verb, state) for verb, legal in LEGAL_FROM.items() for state in STATES if state not in legal
]


@pytest.mark.parametrize(("verb", "start", "end"), LEGAL, ids=[f"{v}-{s}" for v, s, _ in LEGAL])
def test_legal_transition_moves_and_is_audited(
    verb: str, start: str, end: str, engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    campaign_id = _campaign_in(start, engine, settings, clock)
    now = clock.advance(minutes=1)
    _verb(verb, engine, campaign_id, actor="lead", now=now, settings=settings)

    with session_scope(engine) as session:
        campaign = session.get(Campaign, campaign_id)
    assert campaign is not None
    assert (campaign.status, campaign.updated_at) == (end, now)
    entry = _last_audit(engine, campaign_id)
    assert (entry.action, entry.actor, entry.entity, entry.at) == (
        f"campaign.{verb}",
        "lead",
        "campaign",
        now,
    )
    assert entry.before == {"status": start.removesuffix("-fired")}
    assert entry.after is not None and entry.after["status"] == end


@pytest.mark.parametrize(("verb", "start"), ILLEGAL, ids=[f"{v}-{s}" for v, s in ILLEGAL])
def test_illegal_transition_is_refused_and_changes_nothing(
    verb: str, start: str, engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    campaign_id = _campaign_in(start, engine, settings, clock)
    before = _snapshot(engine, campaign_id)
    with pytest.raises(Conflict) as refused:
        _verb(
            verb, engine, campaign_id, actor="lead", now=clock.advance(minutes=1), settings=settings
        )
    assert f"campaign {campaign_id} is {start}" in refused.value.message
    if start in ("completed", "cancelled"):
        assert "which is final" in refused.value.message
    else:
        assert f"{verb} needs it to be" in refused.value.message
    assert _snapshot(engine, campaign_id) == before


def test_the_table_covers_every_verb_from_every_state() -> None:
    pairs = {(v, s) for v, s, _ in LEGAL} | set(ILLEGAL)
    assert {(v, s.removesuffix("-fired")) for v, s in pairs} == {
        (v, s) for v in LEGAL_FROM for s in STATES
    }
    assert set(STATES) == {s.value for s in CampaignStatus}


# --- four-eyes --------------------------------------------------------------------------------


def test_four_eyes_refuses_the_author_and_accepts_someone_else(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    four_eyes = settings.model_copy(update={"four_eyes_approval": True})
    campaign_id = _create(engine, four_eyes, clock)
    before = _snapshot(engine, campaign_id)
    with pytest.raises(Conflict, match=r"created by planner; four-eyes approval is on"):
        _verb("approve", engine, campaign_id, actor="planner", now=clock(), settings=four_eyes)
    assert _snapshot(engine, campaign_id) == before

    _verb("approve", engine, campaign_id, actor="approver", now=clock(), settings=four_eyes)
    with session_scope(engine) as session:
        campaign = session.get(Campaign, campaign_id)
    assert campaign is not None
    assert (campaign.status, campaign.approved_by) == ("approved", "approver")
    assert _last_audit(engine, campaign_id).actor == "approver"

    # Past draft, the status is the reason given, not the rule.
    with pytest.raises(Conflict, match="is approved; approve needs it to be draft"):
        _verb("approve", engine, campaign_id, actor="planner", now=clock(), settings=four_eyes)


def test_without_four_eyes_the_author_may_approve(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    assert settings.four_eyes_approval is False
    campaign_id = _create(engine, settings, clock)
    _verb("approve", engine, campaign_id, actor="planner", now=clock(), settings=settings)
    with session_scope(engine) as session:
        campaign = session.get(Campaign, campaign_id)
    assert campaign is not None
    assert (campaign.status, campaign.approved_by) == ("approved", "planner")


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_after_firing_cancels_what_waits_and_leaves_what_went_or_is_going(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    campaign_id = launch(engine, SPEC, settings, clock())
    _fire_first_wave(engine, settings, clock)
    sent_ids = _send(engine, settings, clock, 2)
    with session_scope(engine) as session:  # a worker holds one more when the cancel comes
        held = session.scalars(
            select(col(OutboxMessage.id))
            .where(col(OutboxMessage.status) == MessageStatus.PLANNED)
            .order_by(col(OutboxMessage.id))
            .limit(1)
        ).one()
        session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.id) == held)
            .values(
                status=MessageStatus.CLAIMED,
                lease_owner="slow",
                lease_expires_at=clock() + timedelta(hours=2),  # outlasts this test's time moves
            )
        )
    with session_scope(engine) as session:
        sent_events = session.scalar(
            select(func.count())
            .select_from(DeliveryEvent)
            .where(col(DeliveryEvent.message_id).in_(sent_ids))
        )

    now = clock.advance(minutes=5)
    with session_scope(engine) as session:
        result = cancel_campaign(session, campaign_id, actor="lead", now=now)
    assert (result.messages_cancelled, result.waves_closed) == (3, 1)
    assert result.campaign.status == "cancelled"

    with session_scope(engine) as session:
        outbox = session.scalars(select(OutboxMessage)).all()
        events = session.scalars(
            select(DeliveryEvent).where(col(DeliveryEvent.status) == "cancelled")
        ).all()
        waves = session.scalars(select(Wave).order_by(col(Wave.position))).all()
        stats = campaign_stats(session, campaign_id)
        sent_events_after = session.scalar(
            select(func.count())
            .select_from(DeliveryEvent)
            .where(col(DeliveryEvent.message_id).in_(sent_ids))
        )
    by_status = Counter(m.status for m in outbox)
    assert by_status == {"sent": 2, "claimed": 1, "suppressed": 1, "cancelled": 3}
    cancelled = {m.id: m for m in outbox if m.status == "cancelled"}
    assert all(m.updated_at == now for m in cancelled.values())
    assert next(m for m in outbox if m.status == "claimed").id == held
    assert {m.id for m in outbox if m.status == "sent"} == sent_ids
    assert sent_events_after == sent_events

    # One event per cancelled message, none for any other.
    assert sorted(e.message_id for e in events) == sorted(cancelled)  # type: ignore[type-var]
    assert all(
        (e.kind, e.detail, e.occurred_at, e.channel, e.wave_id)
        == ("status", "campaign cancelled", now, "sms", waves[0].id)
        for e in events
    )

    # The fired wave keeps its status; the one that had not fired is closed with its time kept.
    assert [(w.status, w.fire_at) for w in waves] == [
        (WaveStatus.EXPANDED, FIRST_FIRE),
        (WaveStatus.DONE, SECOND_FIRE),
    ]

    assert stats.status == "cancelled"
    assert stats.total == len(PHONES) == sum(stats.by_status.values())
    assert {s: n for s, n in stats.by_status.items() if n} == by_status
    assert stats.waves[0].by_status == stats.by_status
    assert stats.waves[1].total == 0

    # Nothing more goes out; the second wave's time passes without a fire; it stays cancelled.
    lookup = channel_lookup(settings)
    assert (
        dispatch_once(engine, worker_id="w2", clock=clock, settings=settings, channel_for=lookup)
        == 0
    )
    assert len(_sink_phones(settings)) == 2
    clock.now = SECOND_FIRE + timedelta(minutes=1)
    report = run_tick(engine, now=clock(), settings=settings)
    assert report.fired == {} and report.campaigns_completed == []
    with session_scope(engine) as session:
        assert session.get(Campaign, campaign_id).status == "cancelled"  # type: ignore[union-attr]
    entry = _last_audit(engine, campaign_id)
    assert entry.after == {"status": "cancelled", "messages_cancelled": 3, "waves_closed": 1}


def test_cancel_before_firing_closes_the_waves_so_no_tick_fires_them(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    campaign_id = launch(engine, SPEC, settings, clock())
    with session_scope(engine) as session:
        result = cancel_campaign(session, campaign_id, actor="lead", now=clock.advance(minutes=10))
    assert (result.messages_cancelled, result.waves_closed) == (0, 2)

    with session_scope(engine) as session:
        waves = session.execute(
            select(col(Wave.status), col(Wave.fire_at)).order_by(col(Wave.position))
        ).all()
    assert waves == [(WaveStatus.DONE, FIRST_FIRE), (WaveStatus.DONE, SECOND_FIRE)]

    for moment in (FIRST_FIRE, SECOND_FIRE):
        clock.now = moment
        assert run_tick(engine, now=clock(), settings=settings).fired == {}
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
        assert session.scalar(select(func.count()).select_from(DeliveryEvent)) == 0
        assert session.get(Campaign, campaign_id).status == "cancelled"  # type: ignore[union-attr]


def test_cancel_of_a_draft_closes_its_pending_waves(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    campaign_id = _create(engine, settings, clock)
    with session_scope(engine) as session:
        result = cancel_campaign(session, campaign_id, actor="planner", now=clock())
    assert (result.messages_cancelled, result.waves_closed) == (0, 2)
    with session_scope(engine) as session:
        assert session.execute(select(col(Wave.status), col(Wave.fire_at))).all() == [
            (WaveStatus.DONE, None),
            (WaveStatus.DONE, None),
        ]


# --- pause and resume -------------------------------------------------------------------------


def test_resume_twice_is_refused_and_nothing_is_sent_twice(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    campaign_id = launch(engine, SPEC, settings, clock())
    _fire_first_wave(engine, settings, clock)
    _send(engine, settings, clock, 2)
    assert len(_sink_phones(settings)) == 2

    with session_scope(engine) as session:
        pause_campaign(session, campaign_id, actor="operator", now=clock.advance(minutes=1))
    with session_scope(engine) as session:
        resumed = resume_campaign(
            session, campaign_id, actor="operator", now=clock.advance(minutes=1)
        )
    assert resumed.status == "running"

    before = _snapshot(engine, campaign_id)
    with pytest.raises(Conflict) as refused:
        _verb(
            "resume",
            engine,
            campaign_id,
            actor="operator",
            now=clock.advance(minutes=1),
            settings=settings,
        )
    assert refused.value.message == (
        f"campaign {campaign_id} is running; resume needs it to be paused "
        "(it is not paused, so there is nothing to resume; nothing was changed)"
    )
    assert _snapshot(engine, campaign_id) == before

    _dispatch_all(engine, settings, clock)
    phones = _sink_phones(settings)
    assert sorted(phones) == PHONES[:-1]  # each once; the opted-out one never


def test_a_wave_that_fires_during_a_pause_makes_resume_go_to_running(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    campaign_id = launch(engine, SPEC, settings, clock())
    with session_scope(engine) as session:
        pause_campaign(session, campaign_id, actor="operator", now=clock.advance(minutes=5))
    _fire_first_wave(engine, settings, clock)
    with session_scope(engine) as session:
        assert session.get(Campaign, campaign_id).status == "paused"  # type: ignore[union-attr]
        # Resumed from a machine whose clock is behind the scheduler's: the wave's status decides.
        behind = FIRST_FIRE - timedelta(minutes=1)
        resumed = resume_campaign(session, campaign_id, actor="operator", now=behind)
    assert resumed.status == "running"


def test_resume_after_a_wave_fell_due_goes_to_running(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    """The scheduler may be firing that wave right now; it only moves scheduled campaigns on."""
    campaign_id = launch(engine, SPEC, settings, clock())
    with session_scope(engine) as session:
        pause_campaign(session, campaign_id, actor="operator", now=clock.advance(minutes=5))
    clock.now = FIRST_FIRE
    with session_scope(engine) as session:
        resumed = resume_campaign(session, campaign_id, actor="operator", now=clock())
    assert resumed.status == "running"
    assert run_tick(engine, now=clock(), settings=settings).fired != {}
    with session_scope(engine) as session:
        assert session.get(Campaign, campaign_id).status == "running"  # type: ignore[union-attr]


def test_pause_and_resume_change_only_the_campaign(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    campaign_id = launch(engine, SPEC, settings, clock())
    _fire_first_wave(engine, settings, clock)
    before = _snapshot(engine, campaign_id)
    with session_scope(engine) as session:
        pause_campaign(session, campaign_id, actor="operator", now=clock())
    with session_scope(engine) as session:
        resume_campaign(session, campaign_id, actor="operator", now=clock())
    after = _snapshot(engine, campaign_id)
    assert (after["waves"], after["outbox"], after["events"]) == (
        before["waves"],
        before["outbox"],
        before["events"],
    )
    assert [a for _, a in after["audit"][-2:]] == ["campaign.pause", "campaign.resume"]
    assert Counter(s for _, s in after["outbox"]) == {
        MessageStatus.PLANNED: len(PHONES) - 1,
        MessageStatus.SUPPRESSED: 1,
    }


# --- CLI --------------------------------------------------------------------------------------


def test_cli_pause_resume_show_cancel(
    engine: Engine, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    from cli import _actor

    campaign_id = launch(engine, SPEC, settings, clock())
    _fire_first_wave(engine, settings, clock)
    env = loa_env(settings.database_url, tmp_path)

    shown = run_loa("campaign", "show", str(campaign_id), env=env).stdout.splitlines()
    assert shown[0] == (
        f"campaign {campaign_id} 'Tháng vận động BHXH 2026': running, time zone Asia/Ho_Chi_Minh"
    )
    assert " ".join(shown[1].split()) == (
        "# wave channel class trigger status next (Asia/Ho_Chi_Minh) made"
    )
    # Local times: 00:30 UTC is 07:30 in Hồ Chí Minh City.
    assert " ".join(shown[2].split()) == "1 Lễ ra quân sms info once expanded 2026-05-08 07:30:00"
    assert " ".join(shown[3].split()) == "2 Nhắc lại sms care once scheduled 2026-05-09 07:30:00"
    assert len(shown) == 4

    def status() -> str:
        with session_scope(engine) as session:
            return session.get(Campaign, campaign_id).status  # type: ignore[union-attr]

    assert "paused" in run_loa("campaign", "pause", str(campaign_id), env=env).stdout
    assert status() == "paused"
    assert "running" in run_loa("campaign", "resume", str(campaign_id), env=env).stdout
    assert status() == "running"
    again = run_loa("campaign", "resume", str(campaign_id), env=env, check=False)
    assert again.returncode == 1
    assert f"Error: campaign {campaign_id} is running; resume needs it to be paused" in again.stderr

    cancelled = run_loa("campaign", "cancel", str(campaign_id), env=env).stdout
    assert f"campaign {campaign_id} cancelled: 6 message(s) cancelled, 1 wave(s)" in cancelled
    assert status() == "cancelled"
    with session_scope(engine) as session:
        audit = session.execute(
            select(col(AuditEntry.action), col(AuditEntry.actor))
            .where(col(AuditEntry.entity_id) == str(campaign_id))
            .order_by(col(AuditEntry.id))
        ).all()
    assert audit[-3:] == [
        ("campaign.pause", _actor()),
        ("campaign.resume", _actor()),
        ("campaign.cancel", _actor()),
    ]
    final = run_loa("campaign", "pause", str(campaign_id), env=env, check=False)
    assert (final.returncode, final.stderr.strip()) == (
        1,
        f"Error: campaign {campaign_id} is cancelled, which is final; pause is not possible",
    )
    missing = run_loa("campaign", "show", "999999", env=env, check=False)
    assert (missing.returncode, missing.stderr.strip()) == (1, "Error: no campaign with id 999999")

    # The approve command honours four-eyes: the author (this CLI user) may not approve.
    own = _create(engine, settings, clock, actor=_actor())
    four_eyes = loa_env(settings.database_url, tmp_path, LOA_FOUR_EYES_APPROVAL="true")
    refused = run_loa("campaign", "approve", str(own), env=four_eyes, check=False)
    assert refused.returncode == 1 and "four-eyes approval is on" in refused.stderr
    assert "approved" in run_loa("campaign", "approve", str(own), env=env).stdout
