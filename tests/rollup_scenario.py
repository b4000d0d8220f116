"""A campaign taken through every way a message moves (expansion, suppression at expansion and at
send time, accepted / refused / ambiguous / transient answers, delivery reports, reconciliation,
cancellation, expiry) and a loudspeaker campaign with plays, driven through the real service
functions; and the rollup computed the slow way (a GROUP BY over every outbox row and play) to
check the triggers' against. Shared by the rollup, API and CLI tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, select, text
from sqlmodel import col

from broadcast.plays import PlayReport, record_plays
from channels.base import Capabilities, Outcome, OutgoingMessage, SendResult
from loa.db import session_scope
from loa.models import (
    Area,
    BroadcastItem,
    BroadcastPlay,
    MessageStatus,
    OutboxMessage,
    Recipient,
    Suppression,
    Wave,
)
from loa.settings import Settings
from scheduler.delivery import apply_delivery_report
from scheduler.dispatch import dispatch_once
from scheduler.lifecycle import cancel_campaign
from scheduler.reconcile import reconcile_unknown
from scheduler.tick import run_tick
from tests.broadcasting import add_audio, launch_broadcast, loudspeaker_wave
from tests.builders import add_areas, add_recipient, launch
from tests.conftest import FakeClock

FIRE_AT = datetime(2026, 5, 8, 1, 30, tzinfo=UTC)  # 08:30 in Vietnam, 21:30 on 7 May in New York
# Long enough for two UCS-2 segments when the name has Vietnamese diacritics, one in GSM-7.
TEMPLATE = "BHXH tinh: {{ name }} oi, thang 5 la Thang van dong BHXH toan dan. Tham gia ngay."
PRICES = {"scripted": {"viettel": {"*": 500}, "*": {"*": 300}}}
# phone -> (commune, carrier, name): the last digit says what the channel answers.
PEOPLE = {
    "+84912000001": ("18301", "Viettel", "Nguyễn Văn An"),  # accepted, then delivered
    "+84912000002": ("18301", "Mobifone", "Tran Van Binh"),  # refused: 21211
    "+84912000003": ("18302", "Viettel", "Le Van Cuong"),  # ambiguous -> unknown -> reconciled
    "+84912000004": ("18302", "Vinaphone", "Pham Thi Dung"),  # transient; cancelled later
    "+84912000005": ("18301", "Viettel", "Hoang Van Em"),  # accepted, then undelivered: 30003
    "+84912000006": ("18301", "Viettel", "Vu Thi Giang"),  # opts out after the expansion
    "+84912000007": ("16801", "Viettel", "Do Van Hung"),  # accepted; province 40, no district
    "+84912000008": ("18302", "Viettel", "Ngo Thi Khanh"),  # suppressed before the expansion
}


class ScriptedChannel:
    """Answers by the number's last digit (see PEOPLE), and can say which messages it has."""

    name = "scripted"
    capabilities = Capabilities(
        max_batch=None, status_callbacks=True, lookup=True, max_body_chars=1600
    )

    def __init__(self) -> None:
        self.received: dict[int, str] = {}

    def send_batch(self, messages: Sequence[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        answers = []
        for m in messages:
            kind = m.to[-1]
            if kind in "157":
                self.received[m.message_id] = f"p-{m.to}"
                answers.append(SendResult(m.message_id, Outcome.ACCEPTED, provider_id=f"p-{m.to}"))
            elif kind == "2":
                answers.append(SendResult(m.message_id, Outcome.PERMANENT, error_code="21211"))
            elif kind == "3":
                self.received[m.message_id] = f"p-{m.to}"
                answers.append(SendResult(m.message_id, Outcome.AMBIGUOUS, detail="timeout"))
            else:
                answers.append(SendResult(m.message_id, Outcome.TRANSIENT, error_code="20429"))
        return answers

    def lookup(self, message_ids: Sequence[int]) -> dict[int, str | None]:
        return {m: self.received.get(m) for m in message_ids}


KEY = ("wave_id", "channel", "area_code", "carrier", "adapter", "status", "error_code", "hour")


# --- the rollup against the outbox ----------------------------------------------------------


def hour_of(instant: datetime) -> int:
    return int(instant.timestamp() // 3600)


def direct_rollup(engine: Engine) -> dict[tuple[Any, ...], tuple[int, int]]:
    """What the rollup must hold, computed the slow way: every outbox row and play read."""
    counts: Counter[tuple[Any, ...]] = Counter()
    segments: Counter[tuple[Any, ...]] = Counter()
    with session_scope(engine) as session:
        for m in session.scalars(select(OutboxMessage)):
            key = (
                m.wave_id,
                m.channel,
                m.area_code or "",
                m.carrier or "",
                m.adapter or "",
                m.status,
                m.error_code or "",
                hour_of(m.created_at),
            )
            counts[key] += 1
            segments[key] += m.segments or 0
        for p in session.scalars(select(BroadcastPlay)):
            key = (
                p.wave_id,
                "loudspeaker",
                p.commune_code,
                "",
                "",
                p.result,
                "",
                hour_of(p.started_at),
            )
            counts[key] += 1
    return {k: (counts[k], segments[k]) for k in counts}


def stored_rollup(
    engine: Engine, table: str = "stats_rollup"
) -> dict[tuple[Any, ...], tuple[int, int]]:
    """The rollup table's rows with something in them, keyed as direct_rollup's."""
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT * FROM {table}")).mappings().all()
    assert all(r["n"] >= 0 and r["segments"] >= 0 for r in rows), rows
    return {
        tuple(r.get(k, "") for k in KEY): (r["n"], r["segments"])
        for r in rows
        if r["n"] or r["segments"]
    }


def without_area(
    rollup: dict[tuple[Any, ...], tuple[int, int]],
) -> dict[tuple[Any, ...], tuple[int, int]]:
    """The rollup summed over areas (the area left as ''), as stats_rollup_wave holds it."""
    counts: Counter[tuple[Any, ...]] = Counter()
    segments: Counter[tuple[Any, ...]] = Counter()
    for key, (n, segs) in rollup.items():
        coarse = (*key[:2], "", *key[3:])
        counts[coarse] += n
        segments[coarse] += segs
    return {k: (counts[k], segments[k]) for k in counts if counts[k] or segments[k]}


AREA_KEY = ("area_code", "channel", "status", "error_code", "carrier", "adapter", "message_class")


def by_area(
    rollup: dict[tuple[Any, ...], tuple[int, int]], classes: dict[int, str]
) -> dict[tuple[Any, ...], tuple[int, int]]:
    """The rollup summed over waves and hours, with each wave's class (`classes`: wave id ->
    class), as stats_rollup_area holds it."""
    counts: Counter[tuple[Any, ...]] = Counter()
    segments: Counter[tuple[Any, ...]] = Counter()
    for key, (n, segs) in rollup.items():
        named = dict(zip(KEY, key, strict=True))
        coarse = tuple(
            classes.get(named["wave_id"], "") if k == "message_class" else named[k]
            for k in AREA_KEY
        )
        counts[coarse] += n
        segments[coarse] += segs
    return {k: (counts[k], segments[k]) for k in counts if counts[k] or segments[k]}


def stored_area_rollup(engine: Engine) -> dict[tuple[Any, ...], tuple[int, int]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM stats_rollup_area")).mappings().all()
    assert all(r["n"] >= 0 and r["segments"] >= 0 for r in rows), rows
    return {
        tuple(r[k] for k in AREA_KEY): (r["n"], r["segments"])
        for r in rows
        if r["n"] or r["segments"]
    }


def assert_exact(engine: Engine) -> None:
    """Each rollup table against a GROUP BY over every outbox row and play."""
    direct = direct_rollup(engine)
    assert stored_rollup(engine) == direct
    assert stored_rollup(engine, "stats_rollup_wave") == without_area(direct)
    with engine.connect() as conn:
        classes = {i: c for i, c in conn.execute(text("SELECT id, message_class FROM wave"))}
    assert stored_area_rollup(engine) == by_area(direct, classes)


def statuses(engine: Engine, wave: str = "A") -> dict[str, str]:
    """phone -> status of the messages of the wave of that name."""
    with session_scope(engine) as session:
        rows = session.execute(
            select(col(Recipient.phone), col(OutboxMessage.status))
            .join(Recipient, col(Recipient.id) == col(OutboxMessage.recipient_id))
            .join(Wave, col(Wave.id) == col(OutboxMessage.wave_id))
            .where(col(Wave.name) == wave)
        ).all()
    return {phone: status for phone, status in rows}


def _wave(name: str, areas: list[str], at: str) -> dict[str, Any]:
    return {
        "name": name,
        "channel": "sms",
        "at": at,
        "audience": {"areas": areas},
        "template": TEMPLATE,
    }


def priced(settings: Settings) -> Settings:
    return settings.model_copy(update={"sms_prices": PRICES})


def live_campaigns(engine: Engine, priced: Settings, clock: FakeClock) -> dict[str, int]:
    """A campaign taken through every way a message moves, the rollup checked after each step;
    and a loudspeaker campaign with reported plays. Returns the campaign ids."""
    settings = priced
    with session_scope(engine) as session:
        add_areas(session)
        for phone, (commune, carrier, name) in PEOPLE.items():
            add_recipient(session, phone, now=clock(), area=commune, name=name).carrier = carrier
        session.add(Suppression(phone="+84912000008", reason="opt_out", created_at=clock()))
    ids = {
        "sms": launch(
            engine,
            {"name": "SMS", "waves": [_wave("A", ["42", "40"], "2026-05-08 08:30")]},
            settings,
            clock(),
        )
    }
    # A second campaign whose wave fires when the service has been down too long: it expires.
    ids["late"] = launch(
        engine,
        {"name": "Late", "waves": [_wave("L", ["40"], "2026-05-08 09:00")]},
        settings,
        clock(),
    )

    clock.now = FIRE_AT
    run_tick(engine, now=clock(), settings=settings)  # expansion (one suppressed already)
    assert_exact(engine)

    with session_scope(engine) as session:  # an opt-out after the expansion
        session.add(Suppression(phone="+84912000006", reason="opt_out", created_at=clock()))
    channel = ScriptedChannel()
    while dispatch_once(
        engine, worker_id="w", clock=clock, settings=settings, channel_for=lambda _: channel
    ):
        pass
    assert_exact(engine)
    assert statuses(engine)["+84912000003"] == MessageStatus.UNKNOWN

    with session_scope(engine) as session:  # delivery reports (webhooks)
        apply_delivery_report(
            session,
            channel="sms",
            provider_id="p-+84912000001",
            status=MessageStatus.DELIVERED,
            now=clock(),
        )
        apply_delivery_report(
            session,
            channel="sms",
            provider_id="p-+84912000005",
            status=MessageStatus.UNDELIVERED,
            error_code="30003",
            now=clock(),
        )
    assert_exact(engine)

    clock.advance(seconds=settings.lease_seconds + 1)
    assert (
        reconcile_unknown(
            engine, channel_for=lambda _: channel, now=clock(), settings=settings
        ).sent
        == 1
    )
    assert_exact(engine)

    with session_scope(engine) as session:  # the retried message is still planned: cancelled
        assert cancel_campaign(session, ids["sms"], actor="a", now=clock()).messages_cancelled == 1
    assert_exact(engine)

    clock.now = FIRE_AT + timedelta(hours=4)  # the late wave (09:00) fires 3.5 h after its time
    run_tick(engine, now=clock(), settings=settings)
    assert_exact(engine)

    ids["broadcast"] = _plays(engine, settings, clock)
    assert_exact(engine)
    return ids


def _plays(engine: Engine, settings: Settings, clock: FakeClock) -> int:
    """A loudspeaker campaign for 9 May; both communes of district 440 report its first slot
    (one played, one skipped), and 18301 its second. Returns the campaign id."""
    with session_scope(engine) as session:
        audio = add_audio(session, "bhxh", duration_ms=30_000, now=clock())
    campaign_id = launch_broadcast(engine, settings, clock(), loudspeaker_wave(audio), name="Loa")
    with session_scope(engine) as session:
        first, second = session.scalars(
            select(BroadcastItem).order_by(col(BroadcastItem.starts_at))
        ).all()[:2]
        area = session.get(Area, "440")
        assert area is not None and first.id is not None and second.id is not None

        def play(
            item: BroadcastItem, commune: str, result: Literal["played", "skipped"]
        ) -> PlayReport:
            return PlayReport(
                item=item.id or 0,
                commune=commune,
                started_at=item.starts_at,
                ended_at=item.starts_at + timedelta(seconds=30),
                result=result,
            )

        clock.now = second.starts_at + timedelta(hours=1)
        reports = [
            play(first, "18301", "played"),
            play(first, "18302", "skipped"),
            play(second, "18301", "played"),
        ]
        record_plays(session, area, reports, actor="district", now=clock())
        # The same report again adds nothing.
        assert record_plays(session, area, reports[:1], actor="district", now=clock()).stored == 0
    return campaign_id
