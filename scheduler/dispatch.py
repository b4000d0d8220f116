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

import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, exists, func, insert, or_, select, update
from sqlmodel import Session, col

from channels.base import Channel, Outcome, OutgoingMessage, SendResult
from loa.clock import Clock
from loa.db import session_scope
from loa.models import DeliveryEvent, MessageStatus, OutboxMessage, Recipient, Suppression, Wave
from loa.settings import Settings
from templates.render import TemplateProblem, render

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    wave_id: int
    channel: str
    phone: str
    name: str | None
    attributes: dict[str, Any]
    template: str


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
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "wave_id": wave_id,
        "channel": channel,
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
    session: Session, moved: Sequence[Any], status: MessageStatus, now: datetime, detail: str
) -> None:
    if moved:
        session.execute(
            insert(DeliveryEvent),
            [
                _event(m.id, m.wave_id, m.channel, "status", status, now, detail=detail)
                for m in moved
            ],
        )


def release_expired_leases(session: Session, *, now: datetime) -> None:
    """Claims of a vanished worker go back to `planned`; its sends in flight become `unknown`."""
    expired = col(OutboxMessage.lease_expires_at) < now
    session.execute(
        update(OutboxMessage)
        .where(col(OutboxMessage.status) == MessageStatus.CLAIMED, expired)
        .values(
            status=MessageStatus.PLANNED, lease_owner=None, lease_expires_at=None, updated_at=now
        )
    )
    lost = session.execute(
        update(OutboxMessage)
        .where(col(OutboxMessage.status) == MessageStatus.SENDING, expired)
        .values(status=MessageStatus.UNKNOWN, lease_expires_at=None, updated_at=now)
        .returning(*_MOVED)
    ).all()
    _record_moves(
        session,
        lost,
        MessageStatus.UNKNOWN,
        now,
        "worker lease expired during send; outcome unknown",
    )
    if lost:
        log.warning("lease expired on %d message(s) being sent; marked unknown", len(lost))


def claim_batch(
    session: Session, *, worker_id: str, now: datetime, lease_seconds: int, limit: int
) -> list[ClaimedMessage]:
    due = (
        select(col(OutboxMessage.id))
        .where(col(OutboxMessage.status) == MessageStatus.PLANNED, col(OutboxMessage.due_at) <= now)
        .order_by(col(OutboxMessage.due_at), col(OutboxMessage.id))
        .limit(limit)
        # Concurrent workers on PostgreSQL skip each other's rows instead of queueing behind them;
        # SQLite has one writer at a time anyway (and ignores the clause).
        .with_for_update(skip_locked=True)
    )
    claimed_ids = list(
        session.scalars(
            update(OutboxMessage)
            # The status again: PostgreSQL re-checks the outer condition on a row changed meanwhile.
            .where(
                col(OutboxMessage.id).in_(due.scalar_subquery()),
                col(OutboxMessage.status) == MessageStatus.PLANNED,
            )
            .values(
                status=MessageStatus.CLAIMED,
                lease_owner=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            .returning(col(OutboxMessage.id))
        )
    )
    if not claimed_ids:
        return []

    # Suppression is checked now, not only at planning: an opt-out mid-wave stops the rest.
    suppressed = session.execute(
        update(OutboxMessage)
        .where(
            col(OutboxMessage.id).in_(claimed_ids),
            exists(
                select(1)
                .select_from(Recipient)
                .join(Suppression, col(Suppression.phone) == col(Recipient.phone))
                .where(col(Recipient.id) == col(OutboxMessage.recipient_id))
            ),
        )
        .values(
            status=MessageStatus.SUPPRESSED, lease_owner=None, lease_expires_at=None, updated_at=now
        )
        .returning(*_MOVED)
    ).all()
    _record_moves(session, suppressed, MessageStatus.SUPPRESSED, now, "suppressed at send time")

    rows = session.execute(
        select(
            col(OutboxMessage.id),
            col(OutboxMessage.wave_id),
            col(OutboxMessage.channel),
            col(Recipient.phone),
            col(Recipient.name),
            col(Recipient.attributes),
            col(Wave.body),
        )
        .join(Recipient, col(Recipient.id) == col(OutboxMessage.recipient_id))
        .join(Wave, col(Wave.id) == col(OutboxMessage.wave_id))
        .where(
            col(OutboxMessage.id).in_(claimed_ids),
            col(OutboxMessage.status) == MessageStatus.CLAIMED,
        )
        .order_by(col(OutboxMessage.id))
    ).all()
    return [
        ClaimedMessage(r[0], r[1], r[2], r[3], r[4], dict(r[5] or {}), r[6] or "") for r in rows
    ]


def _render_all(
    claimed: Sequence[ClaimedMessage],
) -> tuple[list[tuple[ClaimedMessage, str]], list[SendResult]]:
    ready, failed = [], []
    for message in claimed:
        context = {**message.attributes, "name": message.name or "", "phone": message.phone}
        try:
            ready.append((message, render(message.template, context)))
        except TemplateProblem as exc:
            failed.append(
                SendResult(message.id, Outcome.PERMANENT, error_code="template", detail=exc.message)
            )
    return ready, failed


def begin_sending(
    session: Session, ready: Sequence[ClaimedMessage], *, worker_id: str, now: datetime
) -> None:
    if not ready:
        return
    session.execute(
        update(OutboxMessage)
        .where(
            col(OutboxMessage.id).in_([m.id for m in ready]),
            col(OutboxMessage.lease_owner) == worker_id,
        )
        .values(
            status=MessageStatus.SENDING, attempts=col(OutboxMessage.attempts) + 1, updated_at=now
        )
    )
    session.execute(
        insert(DeliveryEvent),
        [_event(m.id, m.wave_id, m.channel, "attempt", MessageStatus.SENDING, now) for m in ready],
    )


def _new_status(result: SendResult, attempts: int, max_attempts: int) -> MessageStatus:
    if result.outcome == Outcome.ACCEPTED:
        return MessageStatus.SENT
    if result.outcome == Outcome.PERMANENT:
        return MessageStatus.FAILED
    if result.outcome == Outcome.AMBIGUOUS:
        return MessageStatus.UNKNOWN
    return MessageStatus.PLANNED if attempts < max_attempts else MessageStatus.FAILED


def record_results(
    session: Session,
    results: Sequence[SendResult],
    claimed: dict[int, ClaimedMessage],
    *,
    worker_id: str,
    now: datetime,
    settings: Settings,
) -> None:
    if not results:
        return
    attempts = dict(
        session.execute(
            select(col(OutboxMessage.id), col(OutboxMessage.attempts)).where(
                col(OutboxMessage.id).in_([r.message_id for r in results])
            )
        ).all()
    )
    updates, events = [], []
    for result in results:
        message = claimed[result.message_id]
        tries = attempts.get(result.message_id, 0)
        status = _new_status(result, tries, settings.max_attempts)
        retry = timedelta(
            seconds=result.retry_after
            if result.retry_after is not None
            else settings.retry_after_seconds
        )
        updates.append(
            {
                "b_id": result.message_id,
                "b_status": status,
                "b_provider_id": result.provider_id,
                "b_error_code": result.error_code,
                "b_due_at": now + retry if status == MessageStatus.PLANNED else None,
                "b_sent_at": now if status == MessageStatus.SENT else None,
            }
        )
        detail = result.detail
        if status == MessageStatus.FAILED and result.outcome == Outcome.TRANSIENT:
            detail = f"gave up after {tries} attempts: {detail or result.error_code}"
        events.append(
            _event(
                message.id,
                message.wave_id,
                message.channel,
                "status",
                status,
                now,
                result.provider_id,
                result.error_code,
                detail,
            )
        )
    table = OutboxMessage.__table__  # type: ignore[attr-defined]
    # Only this worker's rows still in flight move: a final status is never overwritten, and a row
    # the lease reaper marked `unknown` meanwhile is resolved by the answer we did get.
    session.execute(
        update(table)
        .where(
            table.c.id == bindparam("b_id"),
            table.c.lease_owner == worker_id,
            # OR of equalities, not IN: an expanding IN list cannot be used with executemany.
            or_(
                *(
                    table.c.status == s
                    for s in (MessageStatus.CLAIMED, MessageStatus.SENDING, MessageStatus.UNKNOWN)
                )
            ),
        )
        .values(
            status=bindparam("b_status"),
            provider_id=bindparam("b_provider_id"),
            error_code=bindparam("b_error_code"),
            due_at=func.coalesce(bindparam("b_due_at", type_=table.c.due_at.type), table.c.due_at),
            sent_at=bindparam("b_sent_at", type_=table.c.sent_at.type),
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False),
        updates,
    )
    session.execute(insert(DeliveryEvent), events)


def dispatch_once(
    engine: Engine,
    *,
    worker_id: str,
    clock: Clock,
    settings: Settings,
    channel_for: Callable[[str], Channel],
) -> int:
    """Claim and send one batch. Returns how many messages were claimed (0: nothing was due)."""
    with session_scope(engine) as session:
        release_expired_leases(session, now=clock())
        claimed = claim_batch(
            session,
            worker_id=worker_id,
            now=clock(),
            lease_seconds=settings.lease_seconds,
            limit=settings.worker_batch_size,
        )
    if not claimed:
        return 0
    by_id = {m.id: m for m in claimed}
    ready, render_failures = _render_all(claimed)
    with session_scope(engine) as session:
        begin_sending(session, [m for m, _ in ready], worker_id=worker_id, now=clock())
        record_results(
            session, render_failures, by_id, worker_id=worker_id, now=clock(), settings=settings
        )

    by_channel: dict[str, list[OutgoingMessage]] = {}
    for message, body in ready:
        by_channel.setdefault(message.channel, []).append(
            OutgoingMessage(message.id, message.wave_id, message.phone, body)
        )
    results: list[SendResult] = []
    for channel_name, outgoing in by_channel.items():
        try:
            results.extend(channel_for(channel_name).send_batch(outgoing, now=clock()))
        except Exception as exc:  # an adapter bug or a network error mid-batch: outcome unknown
            log.exception("channel %s failed on a batch of %d", channel_name, len(outgoing))
            results.extend(
                SendResult(m.message_id, Outcome.AMBIGUOUS, detail=f"{type(exc).__name__}: {exc}")
                for m in outgoing
            )
    with session_scope(engine) as session:
        record_results(session, results, by_id, worker_id=worker_id, now=clock(), settings=settings)
    return len(claimed)
