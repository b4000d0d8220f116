"""The suppression list over HTTP: read a page, add, import a CSV list, remove. Admin and planner
keys write, operator (and approver) keys read. Each route calls the same function as the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import ClockDep, EngineDep, ReadSessionDep, SessionDep, SettingsDep, require_roles
from api.paging import After, Limit, Page
from api.upload import SOURCE, uploaded_file
from audience.importer import RowError
from audience.phonelist import ListImportReport
from audience.suppression import (
    REASONS,
    SuppressionReason,
    add_suppression,
    import_suppressions,
    list_suppressions,
    remove_suppression,
)
from loa.apikeys import Caller, Role
from loa.db import session_scope
from loa.models import Suppression
from loa.paging import DEFAULT_PAGE

router = APIRouter(prefix="/api/v1/suppressions", tags=["suppressions"])

Reader = Annotated[
    Caller, Depends(require_roles(Role.ADMIN, Role.PLANNER, Role.APPROVER, Role.OPERATOR))
]
Writer = Annotated[Caller, Depends(require_roles(Role.ADMIN, Role.PLANNER))]


class SuppressionPublic(BaseModel):
    phone: str
    reason: str
    note: str | None
    created_at: datetime


class SuppressionCreate(BaseModel):
    phone: str
    reason: str = Field(default=SuppressionReason.MANUAL, description=", ".join(REASONS))
    note: str | None = None


class RejectedRow(BaseModel):
    line: int
    column: str
    value: str
    reason: str


class ListImportResult(BaseModel):
    dry_run: bool
    rows_read: int
    added: int
    updated: int
    rejected: list[RejectedRow]
    ignored_columns: list[str]


class SuppressionImportResult(ListImportResult):
    kept_opt_out: int  # numbers that had opted out, which the file gave another reason


def rejected_rows(rows: list[RowError]) -> list[RejectedRow]:
    return [RejectedRow(line=r.line, column=r.column, value=r.value, reason=r.reason) for r in rows]


def import_result(report: ListImportReport, dry_run: bool) -> dict[str, object]:
    return {
        "dry_run": dry_run,
        "rows_read": report.rows_read,
        "added": report.added,
        "updated": report.updated,
        "rejected": rejected_rows(report.rejected),
        "ignored_columns": report.ignored_columns,
    }


def _public(row: Suppression) -> SuppressionPublic:
    return SuppressionPublic.model_validate(row, from_attributes=True)


@router.get("")
def read_suppressions(
    _caller: Reader,
    session: ReadSessionDep,
    reason: Annotated[str | None, Query(max_length=32)] = None,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[SuppressionPublic]:
    """One page of the list, newest first; `reason` filters. No total: see loa/paging.py."""
    rows, next_after = list_suppressions(session, reason=reason, after=after, limit=limit)
    return Page(items=[_public(r) for r in rows], next_after=next_after)


@router.post("", status_code=201)
def create_suppression(
    body: SuppressionCreate, caller: Writer, session: SessionDep, clock: ClockDep
) -> SuppressionPublic:
    """Put a number on the list (an opt_out already there stays opt_out)."""
    row = add_suppression(
        session, body.phone, reason=body.reason, note=body.note, actor=caller.actor, now=clock()
    )
    return _public(row)


@router.post(
    "/import",
    openapi_extra={
        "requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}
    },
)
async def import_suppression_list(
    request: Request,
    caller: Writer,
    engine: EngineDep,
    clock: ClockDep,
    settings: SettingsDep,
    reason: str = SuppressionReason.DO_NOT_CONTACT,
    dry_run: bool = False,
) -> SuppressionImportResult:
    """Add the numbers of a CSV or XLSX body (a phone column; optional reason and note columns;
    `reason` for rows without one). Rejected rows come back as line, column, value, reason;
    good rows are imported all the same. Nothing is removed, and an opt_out keeps its reason."""
    async with uploaded_file(request, limit=settings.import_max_bytes) as path:

        def run() -> SuppressionImportResult:
            with session_scope(engine) as session:
                report = import_suppressions(
                    session,
                    path,
                    now=clock(),
                    actor=caller.actor,
                    default_reason=reason,
                    dry_run=dry_run,
                    source=SOURCE,
                )
            return SuppressionImportResult(
                **import_result(report, dry_run),
                kept_opt_out=report.kept_opt_out,
            )

        return await run_in_threadpool(run)


@router.delete("/{phone}")
def delete_suppression(
    phone: str,
    caller: Writer,
    session: SessionDep,
    clock: ClockDep,
    opt_out_withdrawn: bool = False,
    note: str | None = None,
) -> SuppressionPublic:
    """Take a number off the list. An opt_out needs opt_out_withdrawn=true: the person asked to
    receive messages again (else 409)."""
    row = remove_suppression(
        session,
        phone,
        actor=caller.actor,
        now=clock(),
        opt_out_withdrawn=opt_out_withdrawn,
        note=note,
    )
    return _public(row)
