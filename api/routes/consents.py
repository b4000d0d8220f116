"""Recorded consent to advertising over HTTP: read a page, add, import a CSV list, withdraw.
Admin and planner keys write, operator (and approver) keys read."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel

from api.deps import ClockDep, EngineDep, ReadSessionDep, SessionDep, SettingsDep, require_roles
from api.paging import After, Limit, Page
from api.routes.suppressions import ListImportResult, import_result
from api.upload import SOURCE, uploaded_file
from audience.consent import add_consent, import_consents, list_consents, remove_consent
from loa.apikeys import Caller, Role
from loa.db import session_scope
from loa.models import Consent
from loa.paging import DEFAULT_PAGE

router = APIRouter(prefix="/api/v1/consents", tags=["consents"])

Reader = Annotated[
    Caller, Depends(require_roles(Role.ADMIN, Role.PLANNER, Role.APPROVER, Role.OPERATOR))
]
Writer = Annotated[Caller, Depends(require_roles(Role.ADMIN, Role.PLANNER))]


class ConsentPublic(BaseModel):
    phone: str
    source: str
    note: str | None
    given_at: datetime


class ConsentCreate(BaseModel):
    phone: str
    note: str | None = None
    given_at: AwareDatetime | None = None  # default: now


class ConsentImportResult(ListImportResult):
    suppressed: int  # accepted numbers on the suppression list: nothing goes to them meanwhile


def _public(row: Consent) -> ConsentPublic:
    return ConsentPublic.model_validate(row, from_attributes=True)


@router.get("")
def read_consents(
    _caller: Reader,
    session: ReadSessionDep,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[ConsentPublic]:
    """One page of recorded consents, newest first. No total: see loa/paging.py."""
    rows, next_after = list_consents(session, after=after, limit=limit)
    return Page(items=[_public(r) for r in rows], next_after=next_after)


@router.post("", status_code=201)
def create_consent(
    body: ConsentCreate, caller: Writer, session: SessionDep, clock: ClockDep
) -> ConsentPublic:
    """Record (or renew) a number's consent to advertising."""
    row = add_consent(
        session,
        body.phone,
        note=body.note,
        given_at=body.given_at,
        actor=caller.actor,
        now=clock(),
    )
    return _public(row)


@router.post(
    "/import",
    openapi_extra={
        "requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}
    },
)
async def import_consent_list(
    request: Request,
    caller: Writer,
    engine: EngineDep,
    clock: ClockDep,
    settings: SettingsDep,
    dry_run: bool = False,
) -> ConsentImportResult:
    """Record the consents of a CSV or XLSX body (a phone column; optional given_at and note).
    Rejected rows come back as line, column, value, reason; good rows are imported all the
    same."""
    async with uploaded_file(request, limit=settings.import_max_bytes) as path:

        def run() -> ConsentImportResult:
            with session_scope(engine) as session:
                report = import_consents(
                    session,
                    path,
                    now=clock(),
                    actor=caller.actor,
                    zone=ZoneInfo(settings.default_timezone),
                    dry_run=dry_run,
                    source=SOURCE,
                )
            return ConsentImportResult(
                **import_result(report, dry_run),
                suppressed=report.suppressed,
            )

        return await run_in_threadpool(run)


@router.delete("/{phone}")
def delete_consent(
    phone: str, caller: Writer, session: SessionDep, clock: ClockDep
) -> ConsentPublic:
    """Withdraw a number's consent: its qc messages not yet sent are suppressed at claim."""
    return _public(remove_consent(session, phone, actor=caller.actor, now=clock()))
