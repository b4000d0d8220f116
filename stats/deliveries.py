"""The delivery log: outbox messages (one per wave x recipient x channel, with its current status)
filtered for an operator, read a page at a time or exported whole.

Pages are keyset pages on the message id (`after`), never OFFSET: page 10,000 costs what page 1
costs. The export walks the same pages, each in its own short transaction, so an export of any
size holds neither memory nor a database snapshot for its whole length.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, Engine, select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from loa.clock import out_of_range
from loa.db import session_scope
from loa.errors import InvalidInput
from loa.models import Area, MessageStatus, OutboxMessage, Recipient, Wave

MAX_PAGE: Final = 1000
EXPORT_BATCH: Final = 5000
STATUSES: Final = frozenset(s.value for s in MessageStatus)


@dataclass(frozen=True)
class DeliveryFilter:
    campaign_id: int | None = None
    wave_id: int | None = None
    channel: str | None = None
    status: str | None = None
    error_code: str | None = None
    area: str | None = None  # an area code: messages to recipients in it or anywhere below
    since: datetime | None = None  # the message's last change (updated_at), inclusive
    until: datetime | None = None  # exclusive

    def check(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise InvalidInput(
                f"status {self.status!r} is not one of {', '.join(sorted(STATUSES))}",
                field="status",
            )
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise InvalidInput(
                    f"{name}: give a time zone (e.g. 2026-05-08T07:00:00+07:00)", field=name
                )
            if moment is not None and (problem := out_of_range(moment)):
                raise InvalidInput(f"{name}: {problem}", field=name)
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput("since must be before until", field="since")


@dataclass(frozen=True)
class Delivery:
    id: int
    campaign_id: int
    wave_id: int
    channel: str
    adapter: str | None
    phone: str
    area_code: str | None
    carrier: str | None
    status: str
    error_code: str | None
    attempts: int
    segments: int | None
    provider_id: str | None
    due_at: datetime
    sent_at: datetime | None
    updated_at: datetime


COLUMNS: Final = [f.name for f in fields(Delivery)]


def _conditions(flt: DeliveryFilter) -> list[ColumnElement[bool]]:
    message = OutboxMessage
    conditions: list[ColumnElement[bool]] = []
    if flt.campaign_id is not None:
        conditions.append(col(Wave.campaign_id) == flt.campaign_id)
    if flt.wave_id is not None:
        conditions.append(col(message.wave_id) == flt.wave_id)
    if flt.channel is not None:
        conditions.append(col(message.channel) == flt.channel)
    if flt.status is not None:
        conditions.append(col(message.status) == flt.status)
    if flt.error_code is not None:
        conditions.append(col(message.error_code) == flt.error_code)
    if flt.area is not None:
        # The area the message was expanded for (outbox.area_code), at any depth below `area`.
        root = aliased(Area)
        below = (
            select(col(Area.code))
            .join(root, col(Area.path).startswith(col(root.path)))
            .where(col(root.code) == flt.area)
        )
        conditions.append(col(message.area_code).in_(below))
    if flt.since is not None:
        conditions.append(col(message.updated_at) >= flt.since)
    if flt.until is not None:
        conditions.append(col(message.updated_at) < flt.until)
    return conditions


def list_deliveries(
    session: Session, flt: DeliveryFilter, *, after: int = 0, limit: int = 100
) -> tuple[list[Delivery], int | None]:
    """One page of messages with id > `after`, by id; and the cursor of the next page (None at
    the end)."""
    flt.check()
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    if after < 0:
        raise InvalidInput("after must be 0 or a message id from a previous page", field="after")
    return _page(session, flt, after, limit)


def _page(
    session: Session, flt: DeliveryFilter, after: int, limit: int
) -> tuple[list[Delivery], int | None]:
    rows = session.execute(
        select(
            col(OutboxMessage.id),
            col(Wave.campaign_id),
            col(OutboxMessage.wave_id),
            col(OutboxMessage.channel),
            col(OutboxMessage.adapter),
            col(Recipient.phone),
            col(OutboxMessage.area_code),
            col(OutboxMessage.carrier),
            col(OutboxMessage.status),
            col(OutboxMessage.error_code),
            col(OutboxMessage.attempts),
            col(OutboxMessage.segments),
            col(OutboxMessage.provider_id),
            col(OutboxMessage.due_at),
            col(OutboxMessage.sent_at),
            col(OutboxMessage.updated_at),
        )
        .join(Wave, col(Wave.id) == col(OutboxMessage.wave_id))
        .join(Recipient, col(Recipient.id) == col(OutboxMessage.recipient_id))
        .where(col(OutboxMessage.id) > after, *_conditions(flt))
        .order_by(col(OutboxMessage.id))
        .limit(limit + 1)  # one more tells whether there is a next page
    ).all()
    page = [Delivery(*row) for row in rows[:limit]]
    return page, (page[-1].id if len(rows) > limit else None)


def _csv_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def csv_lines(rows: Sequence[Delivery], *, header: bool) -> str:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    if header:
        writer.writerow(COLUMNS)
    writer.writerows([_csv_value(getattr(row, name)) for name in COLUMNS] for row in rows)
    return text.getvalue()


def export_deliveries(engine: Engine, flt: DeliveryFilter) -> Iterator[str]:
    """The whole log as CSV text, a batch at a time (header first). Checks the filter before the
    first line, so that a bad filter is an error, not a broken download."""
    flt.check()

    def lines() -> Iterator[str]:
        yield csv_lines([], header=True)
        after: int | None = 0
        while after is not None:
            with session_scope(engine) as session:
                page, after = _page(session, flt, after, EXPORT_BATCH)
            yield csv_lines(page, header=False)

    return lines()
