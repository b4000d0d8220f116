"""The audit log: who changed what, when, with the state before and after; and reading it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from loa.errors import InvalidInput
from loa.models import AuditEntry
from loa.paging import DEFAULT_PAGE, Key, keyset_page


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: int | str,
    now: datetime,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEntry(
            at=now,
            actor=actor,
            action=action,
            entity=entity,
            entity_id=str(entity_id),
            before=before,
            after=after,
        )
    )


@dataclass(frozen=True)
class AuditFilter:
    entity: str | None = None  # campaign, segment, suppression, api_key, ...
    entity_id: str | None = None
    actor: str | None = None  # key:<prefix>, cli:<user>, channel:twilio, ...
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    def check(self) -> None:
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise InvalidInput(
                    f"{name}: give a time zone (e.g. 2026-05-08T07:00:00+07:00)", field=name
                )
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput("since must be before until", field="since")
        if self.entity_id is not None and self.entity is None:
            raise InvalidInput("entity_id needs entity (ids are per kind of thing)", field="entity")


def list_entries(
    session: Session, flt: AuditFilter, *, after: str | None = None, limit: int = DEFAULT_PAGE
) -> tuple[list[AuditEntry], str | None]:
    """One keyset page of the log, newest first, and the cursor of the next page. By id, which
    follows the order of writing; an entity's history goes through ix_audit_log_entity."""
    flt.check()
    statement = select(AuditEntry)
    if flt.entity is not None:
        statement = statement.where(col(AuditEntry.entity) == flt.entity)
    if flt.entity_id is not None:
        statement = statement.where(col(AuditEntry.entity_id) == flt.entity_id)
    if flt.actor is not None:
        statement = statement.where(col(AuditEntry.actor) == flt.actor)
    if flt.since is not None:
        statement = statement.where(col(AuditEntry.at) >= flt.since)
    if flt.until is not None:
        statement = statement.where(col(AuditEntry.at) < flt.until)
    order = [Key(col(AuditEntry.id), descending=True)]
    return keyset_page(session, statement, order, after=after, limit=limit)
