"""Recipients over HTTP: the importer of `loa recipients import`, fed by the request body; and
search (by phone, name prefix, area, tag) with one recipient's record.

The file is the raw body (not a multipart form): `curl --data-binary @danh-sach.xlsx`. A body is
one file, so there is nothing for a form to add but a parser and its limits; the reader is chosen
by the content (a workbook is a zip), so the Content-Type may be text/csv, the xlsx type or
application/octet-stream. The body is streamed to a temporary file and refused with 413 once it
passes LOA_IMPORT_MAX_BYTES, never held whole in memory.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from api.deps import ClockDep, EngineDep, ReadSessionDep, SettingsDep, require_roles
from api.idempotency import IdempotentRoute
from api.paging import After, Limit, Page
from api.upload import SOURCE, uploaded_file
from audience.importer import ImportReport, audit_import, import_recipients, parse_column_mapping
from audience.lookup import RecipientQuery, get_recipient, search_recipients
from audience.segments import mask_phone
from loa.apikeys import Caller, Role
from loa.clock import Clock
from loa.db import MAX_BIGINT, session_scope
from loa.errors import Forbidden
from loa.models import Recipient
from loa.paging import DEFAULT_PAGE
from loa.settings import Settings

router = APIRouter(prefix="/api/v1/recipients", tags=["recipients"], route_class=IdempotentRoute)

Importer = Annotated[Caller, Depends(require_roles(Role.PLANNER, Role.ADMIN))]

XLSX_TYPE: Final = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class RejectedRow(BaseModel):
    line: int  # the row's line in the file (CSV) or its row number in the sheet (XLSX)
    column: str
    value: str
    reason: str


class ImportResult(BaseModel):
    source: str
    dry_run: bool
    rows_read: int
    inserted: int
    updated: int
    converted: int
    unread_sheets: list[str]  # a workbook's other sheets: import each with ?sheet=
    rejected_count: int
    rejected: list[RejectedRow]


@router.post(
    "/import",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string", "format": "binary"}},
                XLSX_TYPE: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
    responses={200: {"content": {"text/csv": {}}}},
)
async def import_file(
    request: Request,
    caller: Importer,
    engine: EngineDep,
    settings: SettingsDep,
    clock: ClockDep,
    dry_run: Annotated[bool, Query(description="Validate and count; write nothing.")] = False,
    column: Annotated[
        list[str] | None,
        Query(description="ROLE=HEADER, repeatable: phone=SĐT, name=Họ tên, area=..., tags=..."),
    ] = None,
    filename: Annotated[
        str | None, Query(max_length=200, description="The file's name, for the messages.")
    ] = None,
    sheet: Annotated[
        str | None,
        Query(max_length=100, description="The sheet of an XLSX workbook (default: the first)."),
    ] = None,
    format: Annotated[
        Literal["json", "csv"] | None,
        Query(description="csv: the rejected rows as CSV (also with Accept: text/csv)."),
    ] = None,
) -> Response:
    """Import recipients from a CSV (UTF-8, comma or semicolon) or XLSX file sent as the body.

    Answers with the counts and every rejected row (line, column, value, reason); as CSV with
    `?format=csv` or `Accept: text/csv` (counts in X-Loa-* headers). A file that cannot be read
    at all is a 422 and writes nothing.
    """
    columns = parse_column_mapping(column or [])
    display = filename or SOURCE
    async with uploaded_file(request, limit=settings.import_max_bytes, display=display) as path:
        report = await run_in_threadpool(
            _import, engine, path, display, dry_run, columns, sheet, settings, clock, caller.actor
        )
    wants_csv = format == "csv" or (
        format is None and "text/csv" in request.headers.get("accept", "")
    )
    if wants_csv:
        return Response(
            report.csv_bytes(),
            media_type="text/csv; charset=utf-8",
            headers={
                "X-Loa-Rows-Read": str(report.rows_read),
                "X-Loa-Inserted": str(report.inserted),
                "X-Loa-Updated": str(report.updated),
                "X-Loa-Rejected": str(len(report.rejected)),
                "X-Loa-Dry-Run": "true" if dry_run else "false",
            },
        )
    result = ImportResult(
        source=display,
        dry_run=dry_run,
        rows_read=report.rows_read,
        inserted=report.inserted,
        updated=report.updated,
        converted=report.converted,
        unread_sheets=report.unread_sheets,
        rejected_count=len(report.rejected),
        rejected=[
            RejectedRow(line=e.line, column=e.column, value=e.value, reason=e.reason)
            for e in report.rejected
        ],
    )
    return Response(result.model_dump_json(), media_type="application/json")


def _import(
    engine: Engine,
    path: Path,
    display: str,
    dry_run: bool,
    columns: dict[str, str],
    sheet: str | None,
    settings: Settings,
    clock: Clock,
    actor: str,
) -> ImportReport:
    # Its own unit of work, in a worker thread: the whole file commits or nothing does.
    now = clock()
    with session_scope(engine) as session:
        report = import_recipients(
            session,
            path,
            now=now,
            dry_run=dry_run,
            columns=columns,
            display=display,
            max_line_bytes=settings.import_max_line_bytes,
            allow_converted=settings.convert_old_numbers,
            sheet=sheet,
        )
        if not dry_run:
            audit_import(session, report, actor=actor, source=display, now=now)
        return report


# --- search -----------------------------------------------------------------------------------
# Who reads recipients: the province's roles. Admin and planner keys (who build audiences and
# import the lists) see whole numbers and the attributes; approver and operator keys see numbers
# masked as in segment samples (+84912***678) and no attributes: a search by name or area would
# otherwise hand out a directory of numbers. Operators still see a message's whole number in the
# delivery log, one message at a time, which their work needs. District keys: none of it.
Reader = Annotated[
    Caller, Depends(require_roles(Role.ADMIN, Role.PLANNER, Role.APPROVER, Role.OPERATOR))
]
FULL_VIEW: Final = frozenset({Role.ADMIN, Role.PLANNER})


class RecipientPublic(BaseModel):
    id: int
    phone: str
    phone_masked: bool  # true: the key's role sees numbers masked
    name: str | None
    area_code: str | None
    carrier: str | None  # from the prefix: an estimate (number portability)
    phone_converted: bool  # an old 11-digit number converted with the 2018 table
    tags: list[str]
    attributes: dict[str, Any] | None  # null when masked
    created_at: datetime
    updated_at: datetime


def _public(recipient: Recipient, caller: Caller) -> RecipientPublic:
    full = caller.role in FULL_VIEW
    assert recipient.id is not None
    return RecipientPublic(
        id=recipient.id,
        phone=recipient.phone if full else mask_phone(recipient.phone),
        phone_masked=not full,
        name=recipient.name,
        area_code=recipient.area_code,
        carrier=recipient.carrier,
        phone_converted=recipient.phone_converted,
        tags=sorted(recipient.tags),
        attributes=recipient.attributes if full else None,
        created_at=recipient.created_at,
        updated_at=recipient.updated_at,
    )


@router.get("")
def search(
    caller: Reader,
    session: ReadSessionDep,
    phone: Annotated[
        str | None, Query(max_length=32, description="Any usual form: 0912 345 678, +84...")
    ] = None,
    name: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="Start of the name (case as written)."),
    ] = None,
    area: Annotated[
        str | None, Query(max_length=16, description="An area code; its sub-areas too.")
    ] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[RecipientPublic]:
    """Recipients matching every filter given, by id. Numbers are masked for approver and
    operator keys, who may not search by number either: a thousand searches would unmask any
    number, and one would tell whether a number is on the list."""
    if phone is not None and caller.role not in FULL_VIEW:
        raise Forbidden(
            f"API key {caller.prefix} has the role {caller.role}, which sees numbers masked; "
            "searching by number needs planner or admin",
            field="phone",
        )
    query = RecipientQuery(phone=phone, name=name, area=area, tag=tag)
    rows, next_after = search_recipients(session, query, after=after, limit=limit)
    return Page(items=[_public(r, caller) for r in rows], next_after=next_after)


@router.get("/{recipient_id}")
def read(
    recipient_id: Annotated[int, PathParam(ge=1, le=MAX_BIGINT)],
    caller: Reader,
    session: ReadSessionDep,
) -> RecipientPublic:
    recipient = get_recipient(session, recipient_id)
    return _public(recipient, caller)
