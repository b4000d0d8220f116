"""Recurring and relative waves through the real scheduler tick and dispatcher, with a clock the
test moves: one child wave per occurrence, each recipient messaged once per occurrence, missed
occurrences expired instead of sent late, recipients who arrive or change their date later.
On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select, update
from sqlmodel import col

from channels.registry import channel_lookup
from loa.db import session_scope
from loa.errors import Conflict, InvalidInput
from loa.models import (
    Campaign,
    DeliveryEvent,
    OutboxMessage,
    Recipient,
    RecipientDate,
    Suppression,
    Wave,
    WaveStatus,
)
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from scheduler.lifecycle import (
    approve_campaign,
    create_campaign,
    launch_campaign,
    pause_campaign,
    resume_campaign,
)
from scheduler.spec import validate_spec
from scheduler.tick import run_tick
from stats.campaign import campaign_stats
from tests.builders import add_areas, add_recipient, launch
from tests.conftest import FakeClock

HCM = ZoneInfo("Asia/Ho_Chi_Minh")


def local(text: str, zone: ZoneInfo = HCM) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone).astimezone(UTC)


def _wave(**trigger: Any) -> dict[str, Any]:
    return {
        "name": "Nhắc",
        "channel": "sms",
        "class": "info",
        "audience": {"areas": ["42"]},
        "template": "Xin chao {{ name }}",
        **trigger,
    }


def _drain(engine: Engine, settings: Settings, clock: FakeClock) -> int:
    lookup = channel_lookup(settings)
    total = 0
    while n := dispatch_once(
        engine, worker_id="w", clock=clock, settings=settings, channel_for=lookup
    ):
        total += n
    return total


def _tick(engine: Engine, settings: Settings, clock: FakeClock, at: datetime) -> None:
    clock.now = at
    run_tick(engine, now=at, settings=settings)
    run_tick(engine, now=at, settings=settings)  # a second tick at once changes nothing


def _sink(settings: Settings) -> list[dict[str, Any]]:
    assert settings.console_sink is not None
    if not settings.console_sink.exists():
        return []
    return [json.loads(x) for x in settings.console_sink.read_text("utf-8").splitlines()]


def _occurrences(engine: Engine) -> dict[str, dict[str, int]]:
    """Occurrence -> outbox counts by status."""
    with session_scope(engine) as session:
        rows = session.execute(
            select(col(Wave.occurrence), col(OutboxMessage.status))
            .join(OutboxMessage, col(OutboxMessage.wave_id) == col(Wave.id), isouter=True)
            .where(col(Wave.parent_id).is_not(None))
        ).all()
    found: dict[str, dict[str, int]] = {}
    for occurrence, status in rows:
        counts = found.setdefault(occurrence, {})
        if status is not None:
            counts[status] = counts.get(status, 0) + 1
    return found


@pytest.fixture
def three_people(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        for i in range(3):
            add_recipient(session, f"+8491200000{i}", now=clock())


RECURRING = {"from": "2026-05-08", "to": "2026-05-10", "times": ["09:00", "17:30"]}


@pytest.mark.usefixtures("three_people")
def test_recurring_wave_messages_everyone_once_per_occurrence(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    clock.now = local("2026-05-08 07:00")
    campaign_id = launch(
        engine, {"name": "C", "waves": [_wave(recurring=RECURRING)]}, settings, clock()
    )
    times = [f"2026-05-{d:02d} {t}" for d in (8, 9, 10) for t in ("09:00", "17:30")]
    for at in times:
        _tick(engine, settings, clock, local(at))
        assert _drain(engine, settings, clock) == 3
    _tick(engine, settings, clock, local("2026-05-10 18:00"))

    sent = Counter(line["to"] for line in _sink(settings))
    assert sent == {f"+8491200000{i}": 6 for i in range(3)}
    assert _occurrences(engine) == {at.replace(" ", "T"): {"sent": 3} for at in times}
    with session_scope(engine) as session:
        parent = session.scalars(select(Wave).where(col(Wave.parent_id).is_(None))).one()
        assert parent.status == WaveStatus.DONE
        assert session.get(Campaign, campaign_id).status == "completed"  # type: ignore[union-attr]
        stats = campaign_stats(session, campaign_id)
    assert [(w.kind, w.occurrences, w.total, w.by_status["sent"]) for w in stats.waves] == [
        ("recurring", 6, 18, 18)
    ]


@pytest.mark.usefixtures("three_people")
def test_occurrences_missed_while_down_expire_and_the_one_within_lateness_goes(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    clock.now = local("2026-05-08 07:00")
    launch(engine, {"name": "C", "waves": [_wave(recurring=RECURRING)]}, settings, clock())
    _tick(engine, settings, clock, local("2026-05-08 09:00"))
    _drain(engine, settings, clock)
    # The scheduler was down from here until 18:00 the next day (30 minutes after 17:30).
    _tick(engine, settings, clock, local("2026-05-09 18:00"))
    _drain(engine, settings, clock)

    assert _occurrences(engine) == {
        "2026-05-08T09:00": {"sent": 3},
        "2026-05-08T17:30": {"expired": 3},
        "2026-05-09T09:00": {"expired": 3},
        "2026-05-09T17:30": {"sent": 3},
    }
    assert len(_sink(settings)) == 6


@pytest.mark.usefixtures("three_people")
def test_messages_of_an_occurrence_paused_past_the_next_one_expire_on_resume(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    clock.now = local("2026-05-08 07:00")
    campaign_id = launch(
        engine, {"name": "C", "waves": [_wave(recurring=RECURRING)]}, settings, clock()
    )
    _tick(engine, settings, clock, local("2026-05-08 09:00"))
    with session_scope(engine) as session:
        pause_campaign(session, campaign_id, actor="a", now=clock())
    clock.now = local("2026-05-08 17:31")
    with session_scope(engine) as session:
        resume_campaign(session, campaign_id, actor="a", now=clock())
    _tick(engine, settings, clock, clock())
    _drain(engine, settings, clock)

    assert _occurrences(engine) == {
        "2026-05-08T09:00": {"expired": 3},
        "2026-05-08T17:30": {"sent": 3},
    }
    with session_scope(engine) as session:
        details = set(
            session.scalars(
                select(col(DeliveryEvent.detail)).where(col(DeliveryEvent.status) == "expired")
            )
        )
    assert details == {"not sent before the occurrence expired"}


def test_recurring_in_a_dst_zone_keeps_local_time_across_the_change(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    with session_scope(engine) as session:
        add_areas(session)
        add_recipient(session, "+84912000000", now=clock())
    clock.now = local("2026-03-27 12:00", berlin)
    spec = {
        "name": "C",
        "timezone": "Europe/Berlin",
        "waves": [
            _wave(
                recurring={"from": "2026-03-28", "to": "2026-03-30", "times": ["09:00"]},
                window="always",
            )
        ],
    }
    launch(engine, spec, settings, clock())
    for day in (28, 29, 30):
        _tick(engine, settings, clock, local(f"2026-03-{day} 09:00", berlin))
        _drain(engine, settings, clock)
    with session_scope(engine) as session:
        fired = session.scalars(
            select(col(Wave.fire_at)).where(col(Wave.parent_id).is_not(None)).order_by(col(Wave.id))
        ).all()
    assert fired == [
        datetime(2026, 3, 28, 8, 0, tzinfo=UTC),  # winter time, UTC+1
        datetime(2026, 3, 29, 7, 0, tzinfo=UTC),  # summer time from that night, UTC+2
        datetime(2026, 3, 30, 7, 0, tzinfo=UTC),
    ]
    assert len(_sink(settings)) == 3


def test_recurring_launched_mid_schedule_starts_at_the_next_occurrence_and_refuses_when_over(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
    clock.now = local("2026-05-09 12:00")
    launch(engine, {"name": "C", "waves": [_wave(recurring=RECURRING)]}, settings, clock())
    with session_scope(engine) as session:
        parent = session.scalars(select(Wave)).one()
        assert parent.fire_at == local("2026-05-09 17:30")
    clock.now = local("2026-05-11 00:00")
    with pytest.raises(Conflict, match=r"its last occurrence \(2026-05-10\) has passed"):
        launch(engine, {"name": "C", "waves": [_wave(recurring=RECURRING)]}, settings, clock())


RELATIVE = {"attribute": "card_expiry", "offset": "-7d", "at": "09:00"}


def _person(engine: Engine, phone: str, now: datetime, **attributes: str) -> int:
    with session_scope(engine) as session:
        recipient = add_recipient(session, phone, now=now, attributes=attributes)
        assert recipient.id is not None
        return recipient.id


def _change_date(engine: Engine, recipient_id: int, value: str, now: datetime) -> None:
    """What a re-import does to a recipient whose card was renewed."""
    with session_scope(engine) as session:
        session.execute(
            update(RecipientDate)
            .where(col(RecipientDate.recipient_id) == recipient_id)
            .values(value=date.fromisoformat(value))
        )
        recipient = session.get(Recipient, recipient_id)
        assert recipient is not None
        recipient.attributes = {**recipient.attributes, "card_expiry": value}
        recipient.updated_at = now


def test_relative_wave_reminds_each_date_once_and_follows_changes(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    clock.now = local("2026-05-08 08:00")
    with session_scope(engine) as session:
        add_areas(session)
    _person(engine, "+84912000001", clock(), card_expiry="2026-05-15")
    renewed_late = _person(engine, "+84912000002", clock(), card_expiry="2026-05-16")
    _person(engine, "+84912000003", clock(), card_expiry="2026-05-14")  # moment before launch
    renewed_early = _person(engine, "+84912000004", clock(), card_expiry="2026-05-20")
    _person(engine, "+84912000005", clock())  # no date: never in a relative wave
    spec = {"name": "C", "waves": [_wave(relative=RELATIVE, template="{{ card_expiry }}")]}
    launch(engine, spec, settings, clock())

    _tick(engine, settings, clock, local("2026-05-08 09:00"))
    assert _drain(engine, settings, clock) == 1
    # Someone imported half an hour later with the same date still gets today's reminder.
    clock.now = local("2026-05-08 09:30")
    _person(engine, "+84912000006", clock(), card_expiry="2026-05-15")
    _tick(engine, settings, clock, clock())
    assert _drain(engine, settings, clock) == 1
    # Planned for 2026-05-16, renewed before the reminder left: cancelled, not sent.
    _tick(engine, settings, clock, local("2026-05-09 09:00"))
    _change_date(engine, renewed_late, "2027-05-16", clock())
    assert _drain(engine, settings, clock) == 0  # claimed, then cancelled: nothing to send
    # Renewed before its date's moment: it joins the new date's occurrence instead.
    _change_date(engine, renewed_early, "2026-05-25", local("2026-05-10 10:00"))
    for day in range(10, 19):
        _tick(engine, settings, clock, local(f"2026-05-{day} 09:00"))
        _drain(engine, settings, clock)

    sent = sorted((line["to"], line["body"]) for line in _sink(settings))
    assert sent == [
        ("+84912000001", "2026-05-15"),
        ("+84912000004", "2026-05-25"),
        ("+84912000006", "2026-05-15"),
    ]
    assert _occurrences(engine) == {
        "2026-05-15": {"sent": 2},
        "2026-05-16": {"cancelled": 1},
        "2026-05-25": {"sent": 1},
    }
    with session_scope(engine) as session:
        cancelled = session.scalars(
            select(DeliveryEvent).where(col(DeliveryEvent.status) == "cancelled")
        ).one()
    assert (
        cancelled.detail == "card_expiry is no longer 2026-05-16: planned for a date that changed"
    )


def test_a_reminder_both_suppressed_and_outdated_ends_suppressed_with_one_event(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    """Set aside for two reasons in the same claim, a message keeps the first (the suppression
    check runs first) and gets one status event, not a second that overwrites it."""
    clock.now = local("2026-05-08 08:00")
    with session_scope(engine) as session:
        add_areas(session)
    person = _person(engine, "+84912000001", clock(), card_expiry="2026-05-15")
    launch(engine, {"name": "C", "waves": [_wave(relative=RELATIVE)]}, settings, clock())
    _tick(engine, settings, clock, local("2026-05-08 09:00"))
    _change_date(engine, person, "2027-05-15", clock())
    with session_scope(engine) as session:
        session.add(Suppression(phone="+84912000001", reason="opt_out", created_at=clock()))
    assert _drain(engine, settings, clock) == 0
    assert _occurrences(engine) == {"2026-05-15": {"suppressed": 1}}
    with session_scope(engine) as session:
        statuses = session.scalars(
            select(col(DeliveryEvent.status)).where(col(DeliveryEvent.kind) == "status")
        ).all()
    assert statuses == ["suppressed"]


def _refused_at_create(
    engine: Engine, settings: Settings, clock: FakeClock, raw: dict[str, Any]
) -> str:
    """The message with which creating the campaign is refused (nothing is written)."""
    spec = validate_spec(raw, source="c.yaml")
    with session_scope(engine) as session, pytest.raises(InvalidInput) as caught:
        create_campaign(
            session, spec=spec, actor="p", now=clock(), settings=settings, source="c.yaml"
        )
    with session_scope(engine) as session:
        assert session.scalars(select(Campaign)).first() is None
    return caught.value.message


def test_relative_wave_on_an_unknown_attribute_is_refused_naming_the_field(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
    _person(engine, "+84912000001", clock(), card_expiry="2026-05-15", ngay_sinh="1980-01-02")
    spec = {"name": "C", "waves": [_wave(relative={**RELATIVE, "attribute": "card_expiy"})]}
    assert _refused_at_create(engine, settings, clock, spec) == (
        "c.yaml: wave 1 ('Nhắc'), field relative.attribute: no recipient has a date in "
        "'card_expiy' (date attributes on file: card_expiry, ngay_sinh)"
    )


def test_a_recurring_time_skipped_by_dst_is_refused_at_create(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
    spec = {
        "name": "C",
        "timezone": "Europe/Berlin",
        "waves": [_wave(recurring={"from": "2026-03-27", "to": "2026-04-02", "times": ["02:30"]})],
    }
    assert _refused_at_create(engine, settings, clock, spec) == (
        "c.yaml: wave 1 ('Nhắc'), field recurring.times: 2026-03-29 02:30 does not exist in "
        "Europe/Berlin (clocks skip it)"
    )


@pytest.mark.usefixtures("three_people")
def test_a_wave_window_of_its_own_overrides_the_class_window(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    clock.now = local("2026-05-08 07:00")
    spec = {"name": "C", "waves": [_wave(at="2026-05-08 07:30", window="10:00-11:00")]}
    launch(engine, spec, settings, clock())
    _tick(engine, settings, clock, local("2026-05-08 07:30"))
    clock.now = local("2026-05-08 09:59:59")
    assert _drain(engine, settings, clock) == 0
    clock.now = local("2026-05-08 10:00")
    assert _drain(engine, settings, clock) == 3


def test_unaccent_waves_send_gsm7_text(
    engine: Engine, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        add_recipient(session, "+84912000001", now=clock(), name="Nguyễn Thị Đào")
    clock.now = local("2026-05-08 07:00")
    spec = {
        "name": "C",
        "waves": [
            _wave(
                at="2026-05-08 08:00",
                template="{{ name }} ơi, thẻ BHYT sắp hết hạn.",
                unaccent=True,
            )
        ],
    }
    launch(engine, spec, settings, clock())
    _tick(engine, settings, clock, local("2026-05-08 08:00"))
    _drain(engine, settings, clock)
    assert [line["body"] for line in _sink(settings)] == [
        "Nguyen Thi Dao oi, the BHYT sap het han."
    ]


def test_occurrences_are_made_once_by_two_schedulers_ticking_together(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    """The UNIQUE (parent, occurrence) key: two ticks that both see the parent due (a standby
    that took over while the old leader was finishing) make each occurrence once."""
    with session_scope(engine) as session:
        add_areas(session)
        add_recipient(session, "+84912000001", now=clock())
    clock.now = local("2026-05-08 07:00")
    campaign_id = launch(
        engine, {"name": "C", "waves": [_wave(recurring=RECURRING)]}, settings, clock()
    )
    at = local("2026-05-08 09:00")
    run_tick(engine, now=at, settings=settings)
    # The other scheduler read the parent before the first moved its fire_at on.
    with session_scope(engine) as session:
        session.execute(
            update(Wave)
            .where(col(Wave.campaign_id) == campaign_id, col(Wave.parent_id).is_(None))
            .values(fire_at=at)
        )
    run_tick(engine, now=at + timedelta(seconds=1), settings=settings)
    assert _occurrences(engine) == {"2026-05-08T09:00": {"planned": 1}}


def test_create_approve_launch_keeps_kinds(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
    _person(engine, "+84912000001", clock(), card_expiry="2026-06-01")
    clock.now = local("2026-05-08 07:00")
    spec = validate_spec(
        {
            "name": "C",
            "waves": [
                _wave(at="2026-05-08 08:00"),
                _wave(recurring=RECURRING),
                _wave(relative={**RELATIVE, "until": "2026-12-31"}),
            ],
        },
        source="c.yaml",
    )
    with session_scope(engine) as session:
        campaign = create_campaign(session, spec=spec, actor="p", now=clock(), settings=settings)
        assert campaign.id is not None
        approve_campaign(session, campaign.id, actor="a", now=clock(), settings=settings)
        launch_campaign(session, campaign.id, actor="a", now=clock(), settings=settings)
        waves = session.scalars(select(Wave).order_by(col(Wave.position))).all()
    assert [(w.kind, w.fire_at) for w in waves] == [
        ("once", local("2026-05-08 08:00")),
        ("recurring", local("2026-05-08 09:00")),
        ("relative", clock()),
    ]
    assert waves[2].covered_through == date(2026, 5, 14)  # 05-15's reminder is due 05-08 09:00
