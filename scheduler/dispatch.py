"""Dispatch: claim due outbox messages, send them through their channel, record what happened.

Every decision is written before the side effect it guards:
1. claim   planned -> claimed, with a lease (owner + expiry); suppression re-checked at this moment;
2. begin   claimed -> sending, one `attempt` event each, committed BEFORE the provider is called;
3. record  sending -> sent | failed | planned (retry later) | unknown (ambiguous), with events.
A worker that dies between 1 and 2 loses nothing: its claims return to `planned` when the lease
expires. One that dies between 2 and 3 leaves `sending` rows; after the lease they become `unknown`
(to reconcile with the provider), never re-sent, because the provider may have accepted them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Engine,
    Text,
    and_,
    bindparam,
    case,
    cast,
    column,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Session, col

from audience.resolve import audience_condition
from channels.base import Channel, Outcome, OutgoingMessage, Routing, SendResult
from loa import metrics
from loa.clock import Clock
from loa.db import UTCDateTime, id_in, session_scope
from loa.models import (
    IN_FLIGHT_ONLY,
    PLANNED_ONLY,
    Consent,
    DeliveryEvent,
    MessageStatus,
    OutboxMessage,
    Recipient,
    RecipientDate,
    Suppression,
    Wave,
)
from loa.settings import Settings
from scheduler.backoff import retry_delay
from scheduler.caps import defer_capped
from scheduler.delivery import record_recipient_problems
from scheduler.gate import sendable_wave_ids
from scheduler.policy import CONSENT_CLASSES, NO_CONSENT
from scheduler.ratelimit import Grant, give_back, take_tokens
from templates.encoding import count_sms
from templates.render import TemplateProblem, render

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    # Fits the 64-character lease owner column with room for a loop number.
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    wave_id: int
    channel: str
    phone: str
    name: str | None
    attributes: dict[str, Any]
    template: str
    attempts: int  # attempts made before this claim
    unaccent: bool = False  # the wave sends its text without Vietnamese diacritics (GSM-7)
    expires_at: datetime | None = None  # not worth sending after this (the wave's deadline)


def _event(
    message_id: int,
    wave_id: int,
    channel: str,
    kind: str,
    status: str,
    now: datetime,
    provider_id: str | None = None,
    error_code: str | None = None,
    detail: str | None = None,
    adapter: str | None = None,
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "wave_id": wave_id,
        "channel": channel,
        "adapter": adapter,
        "kind": kind,
        "status": status,
        "provider_id": provider_id,
        "error_code": error_code,
        "detail": detail,
        "occurred_at": now,
    }


# What a bulk status change returns: enough to write its delivery events.
_MOVED = (col(OutboxMessage.id), col(OutboxMessage.wave_id), col(OutboxMessage.channel))


def _record_moves(
    session: Session,
    moved: Sequence[Any],
    status: MessageStatus,
    now: datetime,
    detail: str,
    error_code: str | None = None,
) -> None:
    if moved:
        session.execute(
            insert(DeliveryEvent),
            [
                _event(
                    m.id,
                    m.wave_id,
                    m.channel,
                    "status",
                    status,
                    now,
                    error_code=error_code,
                    detail=detail,
                    adapter=getattr(m, "adapter", None),
                )
                for m in moved
            ],
        )


def release_expired_leases(session: Session, *, now: datetime) -> None:
    """Claims of a vanished worker go back to `planned`; its sends in flight become `unknown`.

    One statement over the lease index. A `sending` row keeps its lease owner, so that a late
    answer from that worker can still resolve it (see record_results)."""
    outbox = OutboxMessage.__table__  # type: ignore[attr-defined]
    was_claimed = outbox.c.status == MessageStatus.CLAIMED.value
    moved = session.execute(
        update(outbox)
        .where(text(IN_FLIGHT_ONLY), outbox.c.lease_expires_at < now)
        .values(
            status=case(
                (was_claimed, MessageStatus.PLANNED.value), else_=MessageStatus.UNKNOWN.value
            ),
            lease_owner=case((was_claimed, None), else_=outbox.c.lease_owner),
            lease_expires_at=None,
            updated_at=now,
        )
        .returning(
            outbox.c.id, outbox.c.wave_id, outbox.c.channel, outbox.c.status, outbox.c.adapter
        )
    ).all()
    lost = [m for m in moved if m.status == MessageStatus.UNKNOWN]
    _record_moves(
        session,
        lost,
        MessageStatus.UNKNOWN,
        now,
        "worker lease expired during send; outcome unknown",
    )
    if lost:
        log.warning(
            "lease expired on %d message(s) being sent; marked unknown",
            len(lost),
            extra={
                "message_ids": [m.id for m in lost][:100],
                "wave_ids": sorted({m.wave_id for m in lost}),
            },
        )


# Error code of a message whose recipient left the wave's audience before it was sent.
LEFT_AUDIENCE = "left_audience"


def claim_batch(
    session: Session,
    *,
    worker_id: str,
    now: datetime,
    lease_seconds: int,
    limit: int,
    settings: Settings,
    wave_ids: Sequence[int],
) -> list[ClaimedMessage]:
    """Claim up to `limit` due messages of the given waves (those that may send now); the ones
    suppressed or over their class's cap are set aside in the same transaction."""
    claimed_ids: list[int] = []
    # One wave at a time, in the order given, until the batch is full: each claim is an ordered
    # range scan of ix_outbox_due (wave_id, due_at, id) that stops at the batch size.
    for wave_id in wave_ids:
        if len(claimed_ids) >= limit:
            break
        claimed_ids += _claim_from_wave(
            session,
            wave_id,
            worker_id=worker_id,
            now=now,
            lease_seconds=lease_seconds,
            limit=limit - len(claimed_ids),
        )
    if not claimed_ids:
        return []
    bind = session.connection()

    # Suppression is checked now, not only at planning: an opt-out mid-wave stops the rest.
    _set_aside(
        session,
        claimed_ids,
        exists(
            select(1)
            .select_from(Recipient)
            .join(Suppression, col(Suppression.phone) == col(Recipient.phone))
            .where(col(Recipient.id) == col(OutboxMessage.recipient_id))
        ),
        status=MessageStatus.SUPPRESSED,
        detail="suppressed at send time",
        now=now,
    )
    # One look at the claimed waves serves the checks below (a handful of rows).
    waves = session.execute(
        select(
            col(Wave.id), col(Wave.message_class), col(Wave.parent_id), col(Wave.audience)
        ).where(col(Wave.id).in_(wave_ids))
    ).all()
    if settings.qc_requires_consent:
        _suppress_unconsented(
            session,
            claimed_ids,
            [w.id for w in waves if w.message_class in CONSENT_CLASSES],
            now=now,
        )
    _cancel_outdated_dates(
        session,
        claimed_ids,
        [(w.id, w.audience) for w in waves if w.parent_id is not None],
        now=now,
    )
    _cancel_left_audience(session, claimed_ids, [(w.id, w.audience) for w in waves], now=now)
    defer_capped(session, claimed_ids, now=now, settings=settings)

    rows = session.execute(
        select(
            col(OutboxMessage.id),
            col(OutboxMessage.wave_id),
            col(OutboxMessage.channel),
            col(Recipient.phone),
            col(Recipient.name),
            col(Recipient.attributes),
            col(Wave.body),
            col(OutboxMessage.attempts),
            col(Wave.options),
            col(OutboxMessage.expires_at),
            col(Wave.expires_at),
        )
        .join(Recipient, col(Recipient.id) == col(OutboxMessage.recipient_id))
        .join(Wave, col(Wave.id) == col(OutboxMessage.wave_id))
        .where(
            id_in(col(OutboxMessage.id), claimed_ids, bind),
            col(OutboxMessage.status) == MessageStatus.CLAIMED,
        )
        .order_by(col(OutboxMessage.id))
    ).all()
    return [
        ClaimedMessage(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            dict(r[5] or {}),
            r[6] or "",
            r[7],
            unaccent=bool((r[8] or {}).get("unaccent")),
            expires_at=r[9] or r[10],
        )
        for r in rows
    ]


def _claim_from_wave(
    session: Session,
    wave_id: int,
    *,
    worker_id: str,
    now: datetime,
    lease_seconds: int,
    limit: int,
) -> list[int]:
    due = (
        select(col(OutboxMessage.id))
        .where(
            col(OutboxMessage.wave_id) == wave_id,
            text(PLANNED_ONLY),
            col(OutboxMessage.due_at) <= now,
        )
        .order_by(col(OutboxMessage.due_at), col(OutboxMessage.id))
        .limit(limit)
        # Concurrent workers on PostgreSQL skip each other's rows instead of queueing behind them;
        # SQLite has one writer at a time anyway (and ignores the clause).
        .with_for_update(skip_locked=True)
        # MATERIALIZED: the batch is picked exactly once. As a plain subquery PostgreSQL may run it
        # again for each row it updates, each run skipping the rows just locked: the claim would
        # then take every due message, not `limit` of them.
        .cte("batch")
        .prefix_with("MATERIALIZED")
    )
    return list(
        session.scalars(
            update(OutboxMessage)
            # The status again: PostgreSQL re-checks the outer condition on a row changed meanwhile.
            .where(col(OutboxMessage.id).in_(select(due.c.id)), text(PLANNED_ONLY))
            .values(
                status=MessageStatus.CLAIMED,
                lease_owner=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            .returning(col(OutboxMessage.id))
        )
    )


def _suppress_unconsented(
    session: Session, claimed_ids: list[int], qc_wave_ids: Sequence[int], *, now: datetime
) -> None:
    """Advertising claimed for someone whose consent is gone (withdrawn since the expansion) is
    suppressed with error code no_consent. Runs only when the batch has such waves."""
    if not qc_wave_ids:
        return
    _set_aside(
        session,
        claimed_ids,
        and_(
            col(OutboxMessage.wave_id).in_(qc_wave_ids),
            ~exists(
                select(1)
                .select_from(Recipient)
                .join(Consent, col(Consent.phone) == col(Recipient.phone))
                .where(col(Recipient.id) == col(OutboxMessage.recipient_id))
            ),
        ),
        status=MessageStatus.SUPPRESSED,
        error_code=NO_CONSENT,
        detail="no recorded consent to advertising (qc) at send time",
        now=now,
    )


def _cancel_outdated_dates(
    session: Session,
    claimed_ids: list[int],
    occurrences: Sequence[tuple[int, dict[str, Any]]],
    *,
    now: datetime,
) -> None:
    """A reminder planned for a recipient's date (an occurrence of a relative wave) is not sent
    when the date has changed since: the card was renewed, and the new date has its own
    occurrence. Cancelled, with the reason in its event. `occurrences`: (wave id, audience) of
    the claimed waves that are occurrences of a series."""
    dated = [
        (wave_id, audience["date"])
        for wave_id, audience in occurrences
        if "date" in (audience or {})
    ]
    for wave_id, on in dated:
        _set_aside(
            session,
            claimed_ids,
            and_(
                col(OutboxMessage.wave_id) == wave_id,
                ~exists(
                    select(1).where(
                        col(RecipientDate.recipient_id) == col(OutboxMessage.recipient_id),
                        col(RecipientDate.attribute) == on["attribute"],
                        col(RecipientDate.value) == date.fromisoformat(on["on"]),
                    )
                ),
            ),
            status=MessageStatus.CANCELLED,
            error_code="date_changed",
            detail=f"{on['attribute']} is no longer {on['on']}: planned for a date that changed",
            now=now,
        )


def _cancel_left_audience(
    session: Session,
    claimed_ids: list[int],
    waves: Sequence[tuple[int, dict[str, Any]]],
    *,
    now: datetime,
) -> None:
    """The audience is checked again at send time: a recipient who has left it since the
    expansion (moved to another commune, lost a tag, no longer matches the segment's filter as
    pinned at expansion) is not sent the message; it is cancelled with error code left_audience.
    A wave to everyone has nothing to check."""
    dialect = session.connection().dialect.name
    for wave_id, audience in waves:
        # The occurrence date is _cancel_outdated_dates' check, with its own reason.
        rest = {key: value for key, value in (audience or {}).items() if key != "date"}
        if not (rest.get("areas") or rest.get("tags") or rest.get("segment")):
            continue
        _set_aside(
            session,
            claimed_ids,
            and_(
                col(OutboxMessage.wave_id) == wave_id,
                ~exists(
                    select(1)
                    .select_from(Recipient)
                    .where(
                        col(Recipient.id) == col(OutboxMessage.recipient_id),
                        audience_condition(rest, dialect=dialect),
                    )
                ),
            ),
            status=MessageStatus.CANCELLED,
            error_code=LEFT_AUDIENCE,
            detail="no longer in the wave's audience (area, tags or segment changed since "
            "expansion)",
            now=now,
        )


def _set_aside(
    session: Session,
    claimed_ids: list[int],
    condition: ColumnElement[bool],
    *,
    status: MessageStatus,
    detail: str,
    now: datetime,
    error_code: str | None = None,
) -> None:
    """End the claimed messages that meet `condition` with `status` (row and event, one
    statement each) instead of sending them. Only those still `claimed`: a message set aside by
    an earlier check keeps that one reason."""
    values: dict[str, Any] = {
        "status": status,
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": now,
    }
    if error_code is not None:
        values["error_code"] = error_code
    moved = session.execute(
        update(OutboxMessage)
        .where(
            id_in(col(OutboxMessage.id), claimed_ids, session.connection()),
            col(OutboxMessage.status) == MessageStatus.CLAIMED,
            condition,
        )
        .values(**values)
        .returning(*_MOVED)
    ).all()
    _record_moves(session, moved, status, now, detail, error_code=error_code)


def _render_all(
    claimed: Sequence[ClaimedMessage],
) -> tuple[list[tuple[ClaimedMessage, str]], list[SendResult]]:
    ready, failed = [], []
    for message in claimed:
        context = {**message.attributes, "name": message.name or "", "phone": message.phone}
        try:
            ready.append((message, render(message.template, context, unaccent=message.unaccent)))
        except TemplateProblem as exc:
            failed.append(
                SendResult(message.id, Outcome.PERMANENT, error_code="template", detail=exc.message)
            )
    return ready, failed


def begin_sending(
    session: Session,
    ready: Sequence[ClaimedMessage],
    *,
    worker_id: str,
    now: datetime,
    adapters: Mapping[str, str] | None = None,
    segments: Mapping[int, int] | None = None,
) -> None:
    """claimed -> sending and one `attempt` event each: two statements for the whole batch.
    `adapters` maps each wave channel to the adapter the batch goes through, recorded on the
    message and its event before the provider is called (None: the adapter is not recorded).
    `segments` maps messages to the SMS segments of their rendered text, recorded with them:
    what the statistics price (stats/rollup.py)."""
    if not ready:
        return
    ids = [m.id for m in ready]
    bind = session.connection()
    mine = (id_in(col(OutboxMessage.id), ids, bind), col(OutboxMessage.lease_owner) == worker_id)
    values: dict[str, Any] = {
        "status": MessageStatus.SENDING,
        "attempts": col(OutboxMessage.attempts) + 1,
        "updated_at": now,
    }
    if adapters:
        values["adapter"] = case(
            *((col(OutboxMessage.channel) == k, literal(v)) for k, v in adapters.items()),
            else_=None,
        )
    if segments:
        # One branch per distinct count (a batch of one template has one to three), not per
        # message: the batch stays one statement.
        by_count: dict[int, list[int]] = {}
        for message_id, count in segments.items():
            by_count.setdefault(count, []).append(message_id)
        values["segments"] = case(
            *(
                (id_in(col(OutboxMessage.id), group, bind), count)
                for count, group in by_count.items()
            ),
            else_=col(OutboxMessage.segments),
        )
    session.execute(
        update(OutboxMessage)
        .where(*mine, col(OutboxMessage.status) == MessageStatus.CLAIMED)
        .values(**values)
    )
    session.execute(
        insert(DeliveryEvent).from_select(
            ["message_id", "wave_id", "channel", "adapter", "kind", "status", "occurred_at"],
            select(
                col(OutboxMessage.id),
                col(OutboxMessage.wave_id),
                col(OutboxMessage.channel),
                col(OutboxMessage.adapter),
                literal("attempt"),
                literal(MessageStatus.SENDING.value),
                literal(now, UTCDateTime()),
            ).where(*mine, col(OutboxMessage.status) == MessageStatus.SENDING),
        )
    )


def _new_status(result: SendResult, attempts: int, max_attempts: int) -> MessageStatus:
    if result.outcome == Outcome.ACCEPTED:
        return MessageStatus.SENT
    if result.outcome == Outcome.PERMANENT:
        return MessageStatus.FAILED
    if result.outcome == Outcome.AMBIGUOUS:
        return MessageStatus.UNKNOWN
    return MessageStatus.PLANNED if attempts < max_attempts else MessageStatus.FAILED


_RESULT_COLUMNS: dict[str, Any] = {
    "id": BigInteger(),
    "status": Text(),
    "provider_id": Text(),
    "error_code": Text(),
    "detail": Text(),
    "due_at": Text(),
}


def _results_table(session: Session, rows: list[dict[str, Any]]) -> Any:
    """The batch's outcomes as a table the database reads from one JSON parameter.

    One statement for a whole batch instead of one per message: dispatch is bound by round trips.
    Dialect-specific because SQLAlchemy has no portable "table from JSON".
    """
    payload = bindparam("results", json.dumps(rows), type_=Text())
    if session.get_bind().dialect.name == "postgresql":
        return (
            func.jsonb_to_recordset(cast(payload, JSONB))
            .table_valued(*(column(name, type_) for name, type_ in _RESULT_COLUMNS.items()))
            .render_derived(name="r", with_types=True)
        )
    each = func.json_each(payload).table_valued("value")
    return select(
        *(func.json_extract(each.c.value, f"$.{name}").label(name) for name in _RESULT_COLUMNS)
    ).subquery("r")


def record_results(
    session: Session,
    results: Sequence[SendResult],
    attempts: Mapping[int, int],
    *,
    worker_id: str,
    now: datetime,
    settings: Settings,
    rng: random.Random | None = None,
) -> None:
    """Write each outcome to its outbox row and as a `status` event: two statements per batch.
    `attempts` maps each message to the attempts made so far, this one included."""
    if not results:
        return
    dialect = session.get_bind().dialect
    # Exactly as SQLAlchemy stores timestamps on this dialect (SQLite compares them as text).
    as_stored = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    rows = []
    for result in results:
        tries = attempts.get(result.message_id, 0)
        status = _new_status(result, tries, settings.max_attempts)
        detail = result.detail
        due_at = None
        if status == MessageStatus.PLANNED:
            delay = retry_delay(
                tries,
                base_seconds=settings.retry_base_seconds,
                max_seconds=settings.retry_max_seconds,
                provider_hint=result.retry_after,
                rng=rng,
            )
            stored = as_stored(now + timedelta(seconds=delay)) if as_stored else None
            due_at = stored.isoformat() if isinstance(stored, datetime) else stored
        elif status == MessageStatus.FAILED and result.outcome == Outcome.TRANSIENT:
            detail = f"gave up after {tries} attempts: {detail or result.error_code}"
        rows.append(
            {
                "id": result.message_id,
                "status": status.value,
                "provider_id": result.provider_id,
                "error_code": result.error_code,
                "detail": detail,
                "due_at": due_at,
            }
        )
    problems = {r.message_id: r.recipient_problem for r in results if r.recipient_problem}
    if problems:
        # The provider says the number does not work or has unsubscribed: no later wave tries it.
        by_id = {r.message_id: r for r in results}
        record_recipient_problems(
            session,
            problems,
            source="dispatch",
            detail={m: f"error {by_id[m].error_code}: {by_id[m].detail or ''}" for m in problems},
            now=now,
        )
    r = _results_table(session, rows)
    outbox = OutboxMessage.__table__  # type: ignore[attr-defined]
    due_at_value = (
        func.coalesce(cast(r.c.due_at, outbox.c.due_at.type), outbox.c.due_at)
        if dialect.name == "postgresql"
        else func.coalesce(r.c.due_at, outbox.c.due_at)
    )
    # A bare `status` lets both planners walk the status index and scan the whole JSON list for
    # each row found (quadratic in the batch: 250,000 comparisons for 500 rows). As an expression
    # it cannot use that index, so they read the list once and look each row up by primary key.
    in_flight_status = outbox.c.status.concat("")
    # Only this worker's rows still in flight move: a final status is never overwritten, and a row
    # the lease reaper marked `unknown` meanwhile is resolved by the answer we did get.
    moved = session.scalars(
        update(outbox)
        .where(
            outbox.c.id == r.c.id,
            outbox.c.lease_owner == worker_id,
            in_flight_status.in_(
                [MessageStatus.CLAIMED, MessageStatus.SENDING, MessageStatus.UNKNOWN]
            ),
        )
        .values(
            status=r.c.status,
            provider_id=r.c.provider_id,
            error_code=r.c.error_code,
            due_at=due_at_value,
            sent_at=case(
                (r.c.status == MessageStatus.SENT.value, literal(now, UTCDateTime())),
                else_=outbox.c.sent_at,
            ),
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .returning(outbox.c.id)
    ).all()
    if len(moved) < len(rows):
        # Answers that came after the message was settled elsewhere (reconciled after this
        # worker's lease expired): the outbox keeps its status, and no second event is written.
        settled = set(moved)
        log.warning(
            "%d late answer(s) ignored: already settled",
            len(rows) - len(moved),
            extra={
                "worker_id": worker_id,
                "message_ids": [r["id"] for r in rows if r["id"] not in settled][:100],
            },
        )
    if not moved:
        return
    session.execute(
        insert(DeliveryEvent).from_select(
            [
                "message_id",
                "wave_id",
                "channel",
                "adapter",
                "kind",
                "status",
                "provider_id",
                "error_code",
                "detail",
                "occurred_at",
            ],
            select(
                outbox.c.id,
                outbox.c.wave_id,
                outbox.c.channel,
                outbox.c.adapter,
                literal("status"),
                r.c.status,
                r.c.provider_id,
                r.c.error_code,
                r.c.detail,
                literal(now, UTCDateTime()),
            ).where(outbox.c.id == r.c.id, id_in(outbox.c.id, moved, session.connection())),
        )
    )


def _log_results(
    results: Sequence[SendResult], wave_of: Mapping[int, int], *, worker_id: str, adapter: str
) -> None:
    """One line per batch, and one per message at DEBUG (LOA_LOG_LEVEL=DEBUG traces each
    message through its ids; at INFO a million-message wave stays a few thousand lines)."""
    outcomes: dict[str, int] = {}
    for result in results:
        outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "message %d: %s%s",
                result.message_id,
                result.outcome.value,
                f" ({result.error_code})" if result.error_code else "",
                extra={
                    "worker_id": worker_id,
                    "adapter": adapter,
                    "message_id": result.message_id,
                    "wave_id": wave_of.get(result.message_id),
                    "outcome": result.outcome.value,
                    "error_code": result.error_code,
                    "provider_id": result.provider_id,
                },
            )
    log.info(
        "sent a batch of %d through %s: %s",
        len(results),
        adapter,
        ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items())),
        extra={
            "worker_id": worker_id,
            "adapter": adapter,
            "wave_ids": sorted(set(wave_of.values())),
            "outcomes": outcomes,
        },
    )


def dispatch_once(
    engine: Engine,
    *,
    worker_id: str,
    clock: Clock,
    settings: Settings,
    channel_for: Callable[[str], Channel],
    sleep: Callable[[float], object] = time.sleep,
) -> int:
    """Claim and send one batch. Returns how many messages were claimed (0: nothing was due).

    Under a rate limit the batch is one grant of the shared limiter (scheduler/ratelimit.py): the
    loop waits (`sleep`) for the grant's instant, and that instant is the time of the batch's
    attempt events, the instant the limiter counted. A `sleep` that returns early (a stop) gives
    the grant back rather than send before its instant."""
    limit = settings.worker_batch_size
    rate = settings.sms_rate_per_second
    burst = settings.sms_burst or math.ceil(rate)
    grant: Grant | None = None
    if rate:
        with session_scope(engine) as session:
            grant = take_tokens(
                session,
                "sms",
                want=limit,
                rate=rate,
                burst=burst,
                now=clock(),
                # A loop waits up to a second (or a poll) for its turn: one that already holds
                # the next turn keeps the schedule even while every other loop is busy.
                horizon=max(settings.worker_poll_seconds, 1.0),
            )
        if not grant.count:
            return 0
        limit = grant.count
        wait = (grant.at - clock()).total_seconds()
        if wait > 0:
            sleep(wait)
            # Woken well before the instant (a stop); a millisecond is the wall clock's own drift
            # from the timer that slept.
            if clock() < grant.at - timedelta(milliseconds=1):
                with session_scope(engine) as session:
                    give_back(session, "sms", grant=grant, unused=grant.count, burst=burst)
                return 0
    with session_scope(engine) as session:
        now = clock()
        release_expired_leases(session, now=now)
        claimed = claim_batch(
            session,
            worker_id=worker_id,
            now=now,
            lease_seconds=settings.lease_seconds,
            limit=limit,
            settings=settings,
            wave_ids=sendable_wave_ids(session, now=now, settings=settings),
        )
        if grant is not None and len(claimed) < limit:
            give_back(session, "sms", grant=grant, unused=limit - len(claimed), burst=burst)
    if not claimed:
        return 0
    ready, render_failures = _render_all(claimed)
    metrics.count_send_results(metrics.NO_ADAPTER, render_failures)
    for failure in render_failures:
        log.warning(
            "message %d not sent: its template does not render: %s",
            failure.message_id,
            failure.detail,
            extra={
                "message_id": failure.message_id,
                "wave_id": next(m.wave_id for m in claimed if m.id == failure.message_id),
                "worker_id": worker_id,
                "error_code": failure.error_code,
            },
        )
    # Which adapter carries each channel's share of the batch, decided before `sending` is
    # written so that it is written with it: a failover list (channels/failover.py) may pick
    # another adapter for the next batch, and whatever becomes of this one (unknown, a delivery
    # report) must be settled with the provider that may have it.
    routes: dict[str, tuple[Channel, str]] = {}
    for channel_name in dict.fromkeys(m.channel for m, _ in ready):
        channel = channel_for(channel_name)
        routes[channel_name] = (
            channel,
            channel.route(clock()) if isinstance(channel, Routing) else channel.name,
        )
    with session_scope(engine) as session:
        begin_sending(
            session,
            [m for m, _ in ready],
            worker_id=worker_id,
            now=grant.at if grant is not None else clock(),
            adapters={name: adapter for name, (_, adapter) in routes.items()},
            segments={m.id: count_sms(body).segments for m, body in ready},
        )
        record_results(
            session,
            render_failures,
            {m.id: m.attempts for m in claimed},
            worker_id=worker_id,
            now=clock(),
            settings=settings,
        )

    by_channel: dict[str, list[OutgoingMessage]] = {}
    for message, body in ready:
        by_channel.setdefault(message.channel, []).append(
            OutgoingMessage(
                message.id, message.wave_id, message.phone, body, expires_at=message.expires_at
            )
        )
    results: list[SendResult] = []
    for channel_name, outgoing in by_channel.items():
        channel, adapter = routes[channel_name]
        wave_of = {m.message_id: m.wave_id for m in outgoing}
        try:
            if isinstance(channel, Routing):
                sent = channel.send_via(adapter, outgoing, now=clock())
            else:
                sent = channel.send_batch(outgoing, now=clock())
        except Exception as exc:  # an adapter bug or a network error mid-batch: outcome unknown
            log.exception(
                "channel %s (%s) failed on a batch of %d",
                channel_name,
                adapter,
                len(outgoing),
                extra={
                    "worker_id": worker_id,
                    "adapter": adapter,
                    "wave_ids": sorted(set(wave_of.values())),
                },
            )
            sent = [
                SendResult(m.message_id, Outcome.AMBIGUOUS, detail=f"{type(exc).__name__}: {exc}")
                for m in outgoing
            ]
        metrics.count_send_results(adapter, sent)
        _log_results(sent, wave_of, worker_id=worker_id, adapter=adapter)
        results.extend(sent)
    with session_scope(engine) as session:
        record_results(
            session,
            results,
            {m.id: m.attempts + 1 for m, _ in ready},
            worker_id=worker_id,
            now=clock(),
            settings=settings,
        )
    return len(claimed)
