"""Bulk endings of planned outbox messages (a campaign cancelled, an occurrence expired), each
message with its delivery event, in two set-based statements."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, literal, select, update
from sqlmodel import Session, col

from loa.models import DeliveryEvent, MessageStatus, OutboxMessage


def end_planned_messages(
    session: Session, *, wave_ids: Any, status: MessageStatus, detail: str, now: datetime
) -> int:
    """Every planned message of the waves `wave_ids` (a list or a SELECT of ids) takes `status`.

    On PostgreSQL a row a worker is claiming right now is waited for, then skipped (no longer
    planned); a worker's claim skips the rows locked here. Either way each row has one fate.
    The events are written for exactly the rows moved: nothing else moves messages of these
    waves to `status` at this `now` (the caller holds the campaign row, or is the one active
    scheduler)."""
    moved: int = session.execute(
        update(OutboxMessage)
        .where(
            col(OutboxMessage.wave_id).in_(wave_ids),
            col(OutboxMessage.status) == MessageStatus.PLANNED,
        )
        .values(status=status, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if moved:
        table = DeliveryEvent.__table__  # type: ignore[attr-defined]
        rows = select(
            col(OutboxMessage.id),
            col(OutboxMessage.wave_id),
            col(OutboxMessage.channel),
            literal("status"),
            literal(status.value),
            literal(detail),
            literal(now, table.c.occurred_at.type),
        ).where(
            col(OutboxMessage.wave_id).in_(wave_ids),
            col(OutboxMessage.status) == status,
            col(OutboxMessage.updated_at) == now,
        )
        session.execute(
            insert(DeliveryEvent).from_select(
                ["message_id", "wave_id", "channel", "kind", "status", "detail", "occurred_at"],
                rows,
            )
        )
    return moved
