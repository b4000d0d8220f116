"""What a provider tells after the send: delivery reports (webhooks) move an outbox message
forward, and reports about a number (invalid, unsubscribed) put it on the suppression list.

A report only ever moves a message forward: `sent` after `sending` (or `unknown`: the report
proves the provider had it), `delivered` / `undelivered` / `failed` / `cancelled` after those or
`sent`. A final status is never overwritten, so a report that comes twice, or late (`sent` after
`delivered`), changes nothing and writes no event.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from audience.suppression import SuppressionReason, suppress_reported
from channels.base import RecipientProblem
from loa import metrics
from loa.models import DeliveryEvent, MessageStatus, OutboxMessage

log = logging.getLogger(__name__)

REASON_FOR_PROBLEM: Mapping[RecipientProblem, SuppressionReason] = {
    RecipientProblem.INVALID: SuppressionReason.INVALID,
    RecipientProblem.OPTED_OUT: SuppressionReason.OPT_OUT,
}

# The statuses a report may move a message from, per status it reports.
_SENT_FROM = (MessageStatus.SENDING, MessageStatus.UNKNOWN)
_MOVES_FROM: Mapping[MessageStatus, tuple[MessageStatus, ...]] = {
    MessageStatus.SENT: _SENT_FROM,
    MessageStatus.DELIVERED: (*_SENT_FROM, MessageStatus.SENT),
    MessageStatus.UNDELIVERED: (*_SENT_FROM, MessageStatus.SENT),
    MessageStatus.FAILED: (*_SENT_FROM, MessageStatus.SENT),
    MessageStatus.CANCELLED: (*_SENT_FROM, MessageStatus.SENT),
}
REPORTABLE = frozenset(_MOVES_FROM)


def record_recipient_problems(
    session: Session,
    problems: Mapping[int, RecipientProblem],
    *,
    source: str,
    detail: Mapping[int, str] | None = None,
    now: datetime,
) -> list[str]:
    """Suppress the numbers of the messages a provider reported a problem with (message id ->
    problem). Returns the numbers added to (or changed on) the list."""
    reasons = {message_id: REASON_FOR_PROBLEM[p] for message_id, p in problems.items()}
    changed = suppress_reported(session, reasons, source=source, detail=detail, now=now)
    if changed:
        log.warning("%d number(s) suppressed on the provider's report (%s)", len(changed), source)
    return changed


class ReportEffect(StrEnum):
    MOVED = "moved"  # the message took the reported status (one event written)
    UNCHANGED = "unchanged"  # already there or further: a duplicate or a late report
    UNKNOWN_MESSAGE = "unknown_message"  # no outbox message has this id / provider id
    MISMATCH = "mismatch"  # the message was recorded with another provider id, or adapter


@dataclass(frozen=True)
class ReportResult:
    effect: ReportEffect
    message_id: int | None = None
    status: str | None = None  # the message's status after the report
    # When the message was sent (recorded before this report): the report's lag is measured
    # from it. None when not known, or the report was not applied.
    sent_at: datetime | None = None
    wave_id: int | None = None


def apply_delivery_report(
    session: Session,
    *,
    channel: str,
    provider_id: str | None,
    status: MessageStatus,
    adapter: str | None = None,
    message_id: int | None = None,
    error_code: str | None = None,
    problem: RecipientProblem | None = None,
    detail: str | None = None,
    now: datetime,
) -> ReportResult:
    """Apply one delivery report. The message is found by Loa's id when the report carries it
    (it may come before the worker recorded the provider's id), else by the provider's id.
    `adapter`: the adapter the report comes from; a message recorded as carried by another one
    is a mismatch (a failover list has several providers, each reporting on its own messages).
    `provider_id` None: the report does not say it (the message's is kept)."""
    if message_id is None and provider_id is None:
        raise ValueError("a delivery report needs the message id or the provider's id")
    if status not in _MOVES_FROM:
        raise ValueError(f"a delivery report cannot set {status!r}")
    found = sa_select(
        col(OutboxMessage.id),
        col(OutboxMessage.provider_id),
        col(OutboxMessage.channel),
        col(OutboxMessage.adapter),
        col(OutboxMessage.sent_at),
    )
    if message_id is not None:
        found = found.where(col(OutboxMessage.id) == message_id)
    else:
        found = found.where(col(OutboxMessage.provider_id) == provider_id).order_by(
            col(OutboxMessage.id)
        )
    row = session.execute(found).first()
    if row is None or row[2] != channel:
        return ReportResult(ReportEffect.UNKNOWN_MESSAGE, message_id)
    found_id, recorded_id, _, recorded_adapter, sent_at = row
    assert found_id is not None
    if provider_id is not None and recorded_id is not None and recorded_id != provider_id:
        return ReportResult(ReportEffect.MISMATCH, found_id)
    if adapter is not None and recorded_adapter is not None and recorded_adapter != adapter:
        return ReportResult(ReportEffect.MISMATCH, found_id)
    if problem is not None:
        record_recipient_problems(
            session,
            {found_id: problem},
            source=f"channel:{channel}",
            detail={found_id: f"{channel} error {error_code}"},
            now=now,
        )
    values: dict[str, object] = {
        "status": status.value,
        "provider_id": provider_id if provider_id is not None else recorded_id,
        "sent_at": func.coalesce(col(OutboxMessage.sent_at), now),
        # A worker still waiting for the provider's answer finds its row settled and leaves it.
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": now,
    }
    if error_code is not None:
        values["error_code"] = error_code
    moved = session.execute(
        update(OutboxMessage)
        .where(
            col(OutboxMessage.id) == found_id,
            col(OutboxMessage.status).in_([s.value for s in _MOVES_FROM[status]]),
        )
        .values(**values)
        .returning(col(OutboxMessage.wave_id), col(OutboxMessage.status))
    ).first()
    if moved is None:
        current = session.scalar(select(OutboxMessage.status).where(OutboxMessage.id == found_id))
        return ReportResult(ReportEffect.UNCHANGED, found_id, current)
    session.add(
        DeliveryEvent(
            message_id=found_id,
            wave_id=moved[0],
            channel=channel,
            adapter=recorded_adapter or adapter,
            kind="status",
            status=status.value,
            provider_id=provider_id if provider_id is not None else recorded_id,
            error_code=error_code,
            detail=detail,
            occurred_at=now,
        )
    )
    return ReportResult(ReportEffect.MOVED, found_id, status.value, sent_at, moved[0])


# The effect of a report whose status the adapter's mapping says to ignore (not applied).
IGNORED = "ignored"


def observe_report(
    result: ReportResult | None,
    *,
    adapter: str,
    status: MessageStatus | None,
    reported: str,
    provider_id: str | None,
    now: datetime,
) -> None:
    """Count a delivery report in this process's metrics and log it with its ids, once its
    transaction has committed. `result` None: a report the mapping ignores (`status` None)."""
    if result is None:
        metrics.count_delivery_report(adapter, "none", IGNORED, None)
        return
    lag = (
        (now - result.sent_at).total_seconds()
        if result.effect == ReportEffect.MOVED and result.sent_at is not None
        else None
    )
    metrics.count_delivery_report(adapter, status.value if status else "none", result.effect, lag)
    ids = {
        "message_id": result.message_id,
        "wave_id": result.wave_id,
        "adapter": adapter,
        "provider_id": provider_id,
        "effect": result.effect.value,
    }
    if result.effect in (ReportEffect.UNKNOWN_MESSAGE, ReportEffect.MISMATCH):
        log.warning(
            "%s report %s for %s (message %s) ignored: %s",
            adapter,
            reported,
            provider_id,
            result.message_id,
            result.effect.value,
            extra=ids,
        )
    else:
        log.debug(
            "%s report %s: message %s %s",
            adapter,
            reported,
            result.message_id,
            result.effect.value,
            extra={**ids, "status": result.status, "lag_seconds": lag},
        )
