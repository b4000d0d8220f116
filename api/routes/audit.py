"""The audit log over HTTP, for administrators: who changed what, when, before and after."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from api.deps import ReadSessionDep, require_roles
from api.paging import After, Limit, Page
from loa.apikeys import Caller, Role
from loa.audit import AuditFilter, list_entries
from loa.paging import DEFAULT_PAGE

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

Admin = Annotated[Caller, Depends(require_roles(Role.ADMIN))]


class AuditEntryPublic(BaseModel):
    id: int
    at: datetime
    actor: str  # key:<prefix> (an API key), cli:<user>, channel:<name>, scheduler, ...
    action: str  # campaign.approve, suppression.add, apikey.revoke, ...
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@router.get("")
def read_audit(
    _caller: Admin,
    session: ReadSessionDep,
    entity: Annotated[
        str | None, Query(max_length=32, description="campaign, segment, ...")
    ] = None,
    entity_id: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=100, description="e.g. key:1a2b3c4d")] = None,
    since: Annotated[
        datetime | None, Query(description="At or after (ISO 8601 with zone).")
    ] = None,
    until: Annotated[datetime | None, Query(description="Before.")] = None,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[AuditEntryPublic]:
    """The audit log, newest first, filtered by every field given."""
    flt = AuditFilter(entity=entity, entity_id=entity_id, actor=actor, since=since, until=until)
    rows, next_after = list_entries(session, flt, after=after, limit=limit)
    return Page(
        items=[AuditEntryPublic.model_validate(r, from_attributes=True) for r in rows],
        next_after=next_after,
    )
