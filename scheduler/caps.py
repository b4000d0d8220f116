"""Frequency caps at claim time: at most N messages of a class to one recipient in any rolling
period, across every worker.

Inside the claim's transaction, the recipients of the batch are locked (in id order, so two
workers cannot deadlock on them) and what each has had, or is being sent, in the period is
counted. A message over the cap is not dropped: it goes back to `planned`, due when the oldest
message it was counted against leaves the period.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, not_, select, update
from sqlmodel import Session, col

from loa.db import id_in
from loa.models import DeliveryEvent, MessageStatus, OutboxMessage, Recipient, Wave
from loa.settings import Settings
from scheduler.policy import MESSAGE_CLASSES, cap_for

# Messages that count against a cap: on their way or gone (and `unknown`: it may have gone).
COUNTED = (
    MessageStatus.CLAIMED,
    MessageStatus.SENDING,
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.UNDELIVERED,
    MessageStatus.UNKNOWN,
)


def defer_capped(
    session: Session, claimed_ids: list[int], *, now: datetime, settings: Settings
) -> list[int]:
    """Send the batch's over-cap messages back to `planned`, due later; return their ids."""
    caps = {c: cap for c in MESSAGE_CLASSES if (cap := cap_for(c, settings)) is not None}
    if not caps or not claimed_ids:
        return []
    bind = session.connection()
    batch = session.execute(
        select(
            col(OutboxMessage.id),
            col(OutboxMessage.recipient_id),
            col(OutboxMessage.wave_id),
            col(OutboxMessage.channel),
            col(Wave.message_class),
        )
        .join(Wave, col(Wave.id) == col(OutboxMessage.wave_id))
        .where(
            id_in(col(OutboxMessage.id), claimed_ids, bind),
            col(Wave.message_class).in_(list(caps)),
            # Only what is still to be sent: one suppressed or cancelled a moment ago in this
            # claim neither waits for the cap nor counts against it.
            col(OutboxMessage.status) == MessageStatus.CLAIMED,
        )
        .order_by(col(OutboxMessage.id))
    ).all()
    if not batch:
        return []
    recipients = sorted({row.recipient_id for row in batch})
    session.execute(
        select(col(Recipient.id))
        .where(id_in(col(Recipient.id), recipients, bind))
        .order_by(col(Recipient.id))
        .with_for_update()
    )
    counted_at = func.coalesce(col(OutboxMessage.sent_at), col(OutboxMessage.updated_at))
    longest = max(cap.period for cap in caps.values())
    history = session.execute(
        select(col(OutboxMessage.recipient_id), col(Wave.message_class), counted_at)
        .join(Wave, col(Wave.id) == col(OutboxMessage.wave_id))
        .where(
            id_in(col(OutboxMessage.recipient_id), recipients, bind),
            col(Wave.message_class).in_(list(caps)),
            col(OutboxMessage.status).in_(COUNTED),
            counted_at > now - longest,
            not_(id_in(col(OutboxMessage.id), claimed_ids, bind)),
        )
    ).all()
    times: dict[tuple[int, str], list[datetime]] = defaultdict(list)
    for recipient_id, message_class, at in history:
        # Strictly inside: a message sent exactly one period ago no longer counts, which is
        # the moment a deferred message falls due.
        if at > now - caps[message_class].period:
            times[(recipient_id, message_class)].append(at)

    deferred: list[dict[str, Any]] = []
    for row in batch:
        cap = caps[row.message_class]
        seen = sorted(times[(row.recipient_id, row.message_class)])
        if len(seen) < cap.count:
            seen.append(now)  # this one goes now, and counts against the next
            times[(row.recipient_id, row.message_class)] = seen
            continue
        # Free again when enough of the counted messages have left the period.
        due = seen[len(seen) - cap.count] + cap.period
        deferred.append(
            {
                "b_id": row.id,
                "b_due": due,
                "wave_id": row.wave_id,
                "channel": row.channel,
                "cls": row.message_class,
            }
        )
    if not deferred:
        return []
    outbox = OutboxMessage.__table__  # type: ignore[attr-defined]
    session.execute(
        update(outbox)
        .where(outbox.c.id == bindparam("b_id"))
        .values(
            status=MessageStatus.PLANNED.value,
            due_at=bindparam("b_due", type_=outbox.c.due_at.type),
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False),
        [{"b_id": d["b_id"], "b_due": d["b_due"]} for d in deferred],
    )
    session.execute(
        insert(DeliveryEvent),
        [
            {
                "message_id": d["b_id"],
                "wave_id": d["wave_id"],
                "channel": d["channel"],
                "kind": "status",
                "status": MessageStatus.PLANNED.value,
                "error_code": "capped",
                "detail": f"cap of {cap_for(d['cls'], settings)} reached; waits until "
                f"{d['b_due']:%Y-%m-%d %H:%M} UTC",
                "occurred_at": now,
            }
            for d in deferred
        ],
    )
    return [d["b_id"] for d in deferred]
