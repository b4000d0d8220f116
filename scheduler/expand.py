"""Expansion: a due wave becomes one outbox row per recipient, in bulk.

Each chunk is one INSERT ... SELECT ... ON CONFLICT DO NOTHING over a fixed range of recipient ids
(chunk_size ids, whoever of them is in the audience), in its own transaction. Memory does not
depend on the audience size, and a crash mid-wave is repaired by running the expansion again: rows
already there are left alone (the outbox UNIQUE key). The audience is the recipients that exist
when the expansion starts.

Fixed id ranges rather than "the next chunk_size members of the audience": finding where such a
chunk ends cost a sort of the rest of the audience (a third of the time at a million). The price is
paid by a small audience in a large table, which still visits every range: about 14 ms per range
for one date of a relative wave among a million recipients on PostgreSQL, 0.7 s in all.

A wave that names a saved segment has the segment's filter, and the local date of the wave's
time that "within the next N days" counts from, copied into its audience when its expansion
starts (audience/segments.py says why); every chunk then reads the same filter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Engine, case, exists, func, literal, null, or_, select, update
from sqlmodel import Session, col

from audience.resolve import audience_condition
from audience.segments import resolve_audience
from loa.db import session_scope, upsert_insert
from loa.models import (
    Campaign,
    Consent,
    MessageStatus,
    OutboxMessage,
    Recipient,
    Suppression,
    Wave,
    WaveStatus,
)
from scheduler.policy import CONSENT_CLASSES, NO_CONSENT

_COLUMNS = (
    "wave_id",
    "recipient_id",
    "channel",
    "status",
    "due_at",
    "attempts",
    "area_code",
    "carrier",
    "created_at",
    "updated_at",
)


def _expand_chunk(
    session: Session,
    wave: Wave,
    *,
    after_id: int,
    upto: int,
    now: datetime,
    due_at: datetime,
    expired: bool,
    needs_consent: bool,
) -> None:
    """Insert the outbox rows of the wave's audience with ids in (after_id, upto]."""
    audience = audience_condition(wave.audience, dialect=session.get_bind().dialect.name)
    suppressed = exists(select(1).where(col(Suppression.phone) == col(Recipient.phone)))
    unsuppressed = MessageStatus.EXPIRED if expired else MessageStatus.PLANNED
    table = OutboxMessage.__table__  # type: ignore[attr-defined]
    # Suppressed people get a row too, marked so: nobody in the audience disappears silently.
    set_aside: ColumnElement[bool] = suppressed
    columns = list(_COLUMNS)
    extra: list[Any] = []
    if needs_consent:
        # Advertising to someone without recorded consent: suppressed too, with the reason in
        # error_code. Only this path pays for the second lookup; other classes keep the statement
        # they had.
        unconsented = ~exists(select(1).where(col(Consent.phone) == col(Recipient.phone)))
        set_aside = or_(suppressed, unconsented)
        columns.append("error_code")
        extra.append(case((suppressed, null()), (unconsented, literal(NO_CONSENT)), else_=null()))
    status = case(
        (set_aside, literal(MessageStatus.SUPPRESSED.value)), else_=literal(unsuppressed.value)
    )
    rows = select(
        literal(wave.id),
        col(Recipient.id),
        literal(wave.channel),
        status,
        literal(due_at, table.c.due_at.type),
        literal(0),
        col(Recipient.area_code),
        col(Recipient.carrier),
        literal(now, table.c.created_at.type),
        literal(now, table.c.updated_at.type),
        *extra,
    ).where(audience, col(Recipient.id) > after_id, col(Recipient.id) <= upto)
    insert = upsert_insert(session.connection(), table).on_conflict_do_nothing(
        index_elements=["recipient_id", "wave_id", "channel"]
    )
    session.execute(insert.from_select(columns, rows))


def _pin_segment(session: Session, wave_id: int, *, now: datetime) -> Wave:
    """Copy the wave's segment filter and its evaluation date into the wave (once); the wave,
    which every chunk then reads."""
    wave = session.get(Wave, wave_id)
    assert wave is not None
    timezone = session.scalar(
        select(col(Campaign.timezone)).where(col(Campaign.id) == wave.campaign_id)
    )
    assert timezone is not None
    as_of = (wave.fire_at or now).astimezone(ZoneInfo(timezone)).date()
    resolved = resolve_audience(session, wave.audience, as_of=as_of)
    if resolved is not wave.audience:
        wave.audience = resolved
    return wave


def expand_wave(
    engine: Engine,
    wave_id: int,
    *,
    now: datetime,
    chunk_size: int,
    due_at: datetime,
    expired: bool = False,
    qc_requires_consent: bool = True,
) -> int:
    """Expand a scheduled (or half-expanded) wave; return how many outbox rows the wave has.

    Messages are due at `due_at` (the wave's time, or its class's next window opening); with
    `expired` they are written as expired instead of planned: the wave started too late.
    `qc_requires_consent` is the setting: advertising goes only to numbers with consent."""
    with session_scope(engine) as session:
        claimed = session.execute(
            update(Wave)
            .where(
                col(Wave.id) == wave_id,
                col(Wave.status).in_([WaveStatus.SCHEDULED, WaveStatus.EXPANDING]),
            )
            .values(status=WaveStatus.EXPANDING)
        ).rowcount  # type: ignore[attr-defined]
        if not claimed:
            return 0
        wave = _pin_segment(session, wave_id, now=now)

    with session_scope(engine) as session:
        last_id = session.scalar(select(func.max(col(Recipient.id)))) or 0
    for after_id in range(0, last_id, chunk_size):
        with session_scope(engine) as session:
            _expand_chunk(
                session,
                wave,
                after_id=after_id,
                upto=min(after_id + chunk_size, last_id),
                now=now,
                due_at=due_at,
                expired=expired,
                needs_consent=qc_requires_consent and wave.message_class in CONSENT_CLASSES,
            )

    with session_scope(engine) as session:
        count = (
            session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(col(OutboxMessage.wave_id) == wave_id)
            )
            or 0
        )
        session.execute(
            update(Wave)
            .where(col(Wave.id) == wave_id)
            .values(status=WaveStatus.EXPANDED, expanded_at=now, expanded_count=count)
        )
    return count
