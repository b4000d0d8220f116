"""Reconciliation: messages whose send outcome was lost (`unknown`) are settled by asking the
channel, never by sending again blindly. The provider has it -> `sent`; the provider never got
it -> `planned` again (sending it then cannot make a duplicate); the provider cannot tell -> it
stays `unknown` for a person to look at.

The channel asked is the adapter recorded on the message (`outbox.adapter`) when the channel is a
failover list; a message whose recorded adapter is no longer configured stays `unknown`: asking
another provider whether it has a message it was never given would answer "never received it"
and send the message a second time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, text, update
from sqlmodel import Session, col, select

from channels.base import Channel, Reconcilable, Routing
from loa.db import session_scope
from loa.models import UNKNOWN_ONLY, DeliveryEvent, MessageStatus, OutboxMessage
from loa.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    sent: int = 0
    replanned: int = 0
    still_unknown: int = 0


def reconcile_unknown(
    engine: Engine,
    *,
    channel_for: Callable[[str], Channel],
    now: datetime,
    settings: Settings,
    limit: int = 1000,
) -> ReconcileReport:
    report = ReconcileReport()
    settled_before = now - timedelta(seconds=settings.lease_seconds)
    with session_scope(engine) as session:
        rows = session.exec(
            select(
                OutboxMessage.id,
                OutboxMessage.wave_id,
                OutboxMessage.channel,
                OutboxMessage.adapter,
            )
            .where(text(UNKNOWN_ONLY), col(OutboxMessage.updated_at) <= settled_before)
            .order_by(col(OutboxMessage.updated_at))
            .limit(limit)
        ).all()
    by_channel: dict[tuple[str, str | None], list[tuple[int, int]]] = {}
    for message_id, wave_id, channel, recorded in rows:
        assert message_id is not None
        by_channel.setdefault((channel, recorded), []).append((message_id, wave_id))

    for (channel_name, recorded), messages in by_channel.items():
        adapter = _recorded_adapter(channel_for(channel_name), recorded)
        if adapter is None or not isinstance(adapter, Reconcilable):
            report.still_unknown += len(messages)
            log.warning(
                "%d unknown message(s) cannot be reconciled: adapter %s is not configured, or "
                "cannot be asked",
                len(messages),
                recorded or channel_name,
                extra={
                    "adapter": recorded,
                    "message_ids": [m for m, _ in messages][:100],
                    "wave_ids": sorted({w for _, w in messages}),
                },
            )
            continue
        answers = adapter.lookup([m for m, _ in messages])
        sent = [(m, w, answers[m]) for m, w in messages if answers.get(m)]
        never = [(m, w) for m, w in messages if m in answers and answers[m] is None]
        report.still_unknown += len(messages) - len(sent) - len(never)
        with session_scope(engine) as session:
            report.sent += _settle(
                session,
                channel_name,
                recorded,
                now,
                MessageStatus.SENT,
                [(m, w, p) for m, w, p in sent],
                "reconciled: the channel has it",
            )
            report.replanned += _settle(
                session,
                channel_name,
                recorded,
                now,
                MessageStatus.PLANNED,
                [(m, w, None) for m, w in never],
                "reconciled: the channel never received it; planned again",
            )
    if rows:
        log.info("reconciled unknown messages: %s", report)
    return report


def _recorded_adapter(channel: Channel, recorded: str | None) -> Channel | None:
    """The adapter that may have the message; None when it is not the configured one (or in the
    configured failover list). Messages from before adapters were recorded have none: the channel
    is asked, as it was then."""
    if recorded is None:
        return channel
    if isinstance(channel, Routing):
        try:
            return channel.adapter(recorded)
        except KeyError:
            return None
    return channel if channel.name == recorded else None


def _settle(
    session: Session,
    channel: str,
    adapter: str | None,
    now: datetime,
    status: MessageStatus,
    messages: list[tuple[int, int, str | None]],
    detail: str,
) -> int:
    """Move each message that is still `unknown`, with its event. One statement per message: these
    are the few a crash left behind, and RETURNING tells exactly which ones this worker moved (two
    workers may reconcile at once)."""
    moved = 0
    for message_id, wave_id, provider_id in messages:
        done = session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.id) == message_id, text(UNKNOWN_ONLY))
            .values(
                status=status,
                provider_id=provider_id,
                sent_at=now if status == MessageStatus.SENT else None,
                due_at=now if status == MessageStatus.PLANNED else col(OutboxMessage.due_at),
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
            .returning(col(OutboxMessage.id))
        ).first()
        if done is None:
            continue
        moved += 1
        log.info(
            "message %d reconciled: %s",
            message_id,
            status.value,
            extra={
                "message_id": message_id,
                "wave_id": wave_id,
                "adapter": adapter,
                "provider_id": provider_id,
                "status": status.value,
            },
        )
        session.add(
            DeliveryEvent(
                message_id=message_id,
                wave_id=wave_id,
                channel=channel,
                adapter=adapter,
                kind="status",
                status=status,
                provider_id=provider_id,
                detail=detail,
                occurred_at=now,
            )
        )
    return moved
