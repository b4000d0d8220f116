"""A province as the operator page sees it, made through the real service functions: areas with
two districts, recipients, an SMS campaign sent through the console channel with delivery
reports (delivered, and failed with Twilio's error codes), a second campaign half sent, today's
loudspeaker items for two districts, and a key of each kind.

Every time is relative to `now`, so the same world serves a test's fake clock and a real
server's wall clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
from sqlmodel import col

from channels.base import RecipientProblem
from channels.registry import channel_lookup
from loa.apikeys import Role, create_key
from loa.db import session_scope
from loa.models import Area, MessageStatus, OutboxMessage, Wave
from loa.settings import Settings
from scheduler.delivery import apply_delivery_report
from scheduler.dispatch import dispatch_once
from scheduler.tick import run_tick
from tests.broadcasting import add_audio, launch_broadcast, loudspeaker_wave
from tests.builders import AREAS, add_recipient, launch

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
# Hà Tĩnh's second district, beside builders.AREAS' Đức Thọ (440).
MORE_AREAS = [
    ("436", "Huyện Hương Sơn", "district", "42", "/42/436/"),
    ("18100", "Xã Sơn Kim 1", "commune", "436", "/42/436/18100/"),
]
# Recipients per commune: Đức Thọ 6 + 3, Hương Sơn 4, and 2 in Nghệ An's commune that has no
# district above it.
PEOPLE = {"18301": 6, "18302": 3, "18100": 4, "16801": 2}
# What the provider reports, per commune, for the first campaign's messages in order of id;
# "sent" stays as sent (no report yet).
REPORTS = {
    "18301": ["delivered", "delivered", "delivered", "delivered", "30003", "sent"],
    "18302": ["delivered", "delivered", "30007"],
    "18100": ["delivered", "21610", "30003", "sent"],
    "16801": ["delivered", "delivered"],
}
FIRST = "Tháng vận động BHXH toàn dân"
SECOND = "Nhắc hạn thẻ BHYT"


@dataclass(frozen=True)
class World:
    first: int  # campaign ids
    second: int
    broadcasts: int
    keys: dict[str, str]  # admin, operator, planner, approver, district:440, district:436


def _local(instant: datetime) -> str:
    return instant.astimezone(ZONE).strftime("%Y-%m-%d %H:%M")


def _sms_wave(name: str, at: datetime, areas: list[str]) -> dict[str, object]:
    return {
        "name": name,
        "channel": "sms",
        "class": "info",
        "at": _local(at),
        "audience": {"areas": areas},
        "template": "BHXH tinh: {{ name }} oi, thang 5 la Thang van dong BHXH toan dan.",
    }


def _messages_by_commune(engine: Engine, campaign_id: int) -> dict[str, list[int]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(col(OutboxMessage.area_code), col(OutboxMessage.id))
            .join(Wave, col(Wave.id) == col(OutboxMessage.wave_id))
            .where(col(Wave.campaign_id) == campaign_id)
            .order_by(col(OutboxMessage.id))
        ).all()
    by_commune: dict[str, list[int]] = {}
    for area, message_id in rows:
        by_commune.setdefault(area, []).append(message_id)
    return by_commune


def seed(engine: Engine, settings: Settings, now: datetime) -> World:
    # Sent at chosen past instants, at any hour: the send windows have tests of their own.
    settings = settings.model_copy(update={"window_info": "always", "worker_batch_size": 200})
    with session_scope(engine) as session:
        for code, name, level, parent, path in [*AREAS, *MORE_AREAS]:
            session.add(Area(code=code, name=name, level=level, parent_code=parent, path=path))
        session.flush()
        serial = 0
        for commune, count in PEOPLE.items():
            for _ in range(count):
                serial += 1
                add_recipient(
                    session, f"+8491200{serial:04d}", now=now - timedelta(days=1), area=commune
                )
        audio = add_audio(session, "bhxh-diem-tua", duration_ms=95_500, now=now)
        notice = add_audio(session, "lich-tiem-chung", duration_ms=42_000, now=now)

    # The first campaign: everyone, sent, then the provider's reports.
    fire = (now - timedelta(hours=2)).replace(second=0, microsecond=0)
    first = launch(
        engine,
        {
            "name": FIRST,
            "timezone": ZONE.key,
            "waves": [_sms_wave("Lễ ra quân", fire, ["42", "40"])],
        },
        settings,
        fire - timedelta(hours=1),
    )
    run_tick(engine, now=fire, settings=settings)
    lookup = channel_lookup(settings)
    sent_at = fire + timedelta(minutes=1)
    while dispatch_once(
        engine, worker_id="seed", clock=lambda: sent_at, settings=settings, channel_for=lookup
    ):
        pass
    reported_at = fire + timedelta(minutes=5)
    by_commune = _messages_by_commune(engine, first)
    with session_scope(engine) as session:
        for commune, outcomes in REPORTS.items():
            for message_id, outcome in zip(by_commune[commune], outcomes, strict=True):
                if outcome == "sent":
                    continue
                apply_delivery_report(
                    session,
                    channel="sms",
                    provider_id=None,
                    message_id=message_id,
                    status=MessageStatus.DELIVERED
                    if outcome == "delivered"
                    else MessageStatus.FAILED,
                    error_code=None if outcome == "delivered" else outcome,
                    problem=RecipientProblem.OPTED_OUT if outcome == "21610" else None,
                    now=reported_at,
                )

    # The second campaign: Hương Sơn only, two of its four messages out so far.
    second_fire = fire + timedelta(minutes=30)
    second = launch(
        engine,
        {
            "name": SECOND,
            "timezone": ZONE.key,
            "waves": [_sms_wave("Nhắc hạn", second_fire, ["436"])],
        },
        settings,
        fire,
    )
    run_tick(engine, now=second_fire, settings=settings)
    half = settings.model_copy(update={"worker_batch_size": 2})
    dispatch_once(
        engine,
        worker_id="seed",
        clock=lambda: second_fire + timedelta(minutes=1),
        settings=half,
        channel_for=lookup,
    )

    # Today's loudspeaker items, written at the local midnight so that every slot of today is in.
    midnight = datetime.combine(now.astimezone(ZONE).date(), datetime.min.time(), ZONE)
    today = midnight.date().isoformat()
    broadcasts = launch_broadcast(
        engine,
        settings,
        midnight,
        loudspeaker_wave(
            audio,
            recurring={"from": today, "to": today, "times": ["06:00", "17:30"]},
            audience={"areas": ["440"]},
        ),
        loudspeaker_wave(
            notice,
            name="Lịch tiêm chủng",
            recurring={"from": today, "to": today, "times": ["09:00"]},
            audience={"areas": ["436"]},
            priority="priority",
        ),
        name="Phát thanh BHXH",
    )

    with session_scope(engine) as session:
        keys = {
            str(role): create_key(session, role=role, actor="seed", now=now).key
            for role in (Role.ADMIN, Role.OPERATOR, Role.PLANNER, Role.APPROVER)
        }
        for district in ("440", "436"):
            keys[f"district:{district}"] = create_key(
                session, role=Role.DISTRICT, actor="seed", now=now, area_code=district
            ).key
    return World(first=first, second=second, broadcasts=broadcasts, keys=keys)
