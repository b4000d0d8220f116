"""Recorded consent to advertising (class `qc`, Decree 91/2020/ND-CP): who agreed, how, when.

With LOA_QC_REQUIRES_CONSENT (the default) a `qc` message goes only to a number with a row here:
without one it is written as suppressed with error code `no_consent` when the wave expands, and
suppressed the same way when a worker claims it if the consent was withdrawn meanwhile.

Consent is withdrawn by deleting its row (`remove_consent`), and also when the person sends an
opt-out keyword (audience/suppression.py apply_inbound). A suppression wins over a consent:
recording one by hand or by import never takes a number off the suppression list. The one
exception is the person's own opt-in keyword by SMS from that number (LOA_OPT_IN_KEYWORDS, e.g.
DKQC), which lifts the number's opt-out (the person's own refusal, however it was recorded: the
later word of the same person stands), and no other reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select
from sqlmodel import Session, SQLModel, col

from audience.phonelist import (
    NOTE_HEADERS,
    NOTE_MAX,
    BadCell,
    ListImportReport,
    ListRow,
    audit_list_import,
    note_of,
    read_phone_list,
    write_in_chunks,
)
from audience.phones import normalize_phone
from loa import audit
from loa.clock import out_of_range
from loa.db import upsert_insert
from loa.errors import InvalidInput, NotFound
from loa.models import Consent, Suppression
from loa.paging import DEFAULT_PAGE, Key, keyset_page

CONSENT: Final = SQLModel.metadata.tables[Consent.__tablename__]
GIVEN_AT_HEADERS: Final = frozenset(
    {"given_at", "consent_date", "consented_at", "ngay_dong_y", "ngay_dang_ky"}
)
_VN_DATE: Final = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})", re.ASCII)


class ConsentSource(StrEnum):
    IMPORT = "import"  # from a list the office holds (e.g. registration forms)
    KEYWORD = "keyword"  # the person sent the consent keyword (DKQC) by SMS
    MANUAL = "manual"  # recorded by hand


@dataclass
class ConsentImportReport(ListImportReport):
    # Accepted numbers that are on the suppression list: their consent is recorded, but nothing
    # is sent to them while they are suppressed.
    suppressed: int = 0


def _as_dict(row: Consent) -> dict[str, Any]:
    return {"source": row.source, "note": row.note, "given_at": row.given_at.isoformat()}


def add_consent(
    session: Session,
    phone: str,
    *,
    actor: str,
    now: datetime,
    note: str | None = None,
    source: str = ConsentSource.MANUAL,
    given_at: datetime | None = None,
) -> Consent:
    """Record (or renew) a number's consent to advertising."""
    e164 = normalize_phone(phone).e164
    try:
        chosen = ConsentSource(source)
    except ValueError:
        choices = ", ".join(s.value for s in ConsentSource)
        raise InvalidInput(
            f"unknown consent source {source!r}; use one of {choices}", field="source"
        ) from None
    if note is not None and len(note) > NOTE_MAX:
        raise InvalidInput(f"note is longer than {NOTE_MAX} characters", field="note")
    when = given_at or now
    if problem := out_of_range(when):
        raise InvalidInput(f"given_at {problem}", field="given_at")
    if when > now:
        raise InvalidInput("consent cannot be given in the future", field="given_at")
    row = session.get(Consent, e164)
    before = _as_dict(row) if row is not None else None
    if row is None:
        row = Consent(phone=e164, source=chosen, note=note, given_at=when)
        session.add(row)
    else:
        row.source, row.given_at = chosen, when
        row.note = note if note is not None else row.note
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="consent.add",
        entity="consent",
        entity_id=e164,
        now=now,
        before=before,
        after=_as_dict(row),
    )
    return row


def remove_consent(session: Session, phone: str, *, actor: str, now: datetime) -> Consent:
    """Withdraw a number's consent: its `qc` messages not yet sent are suppressed at claim."""
    e164 = normalize_phone(phone).e164
    row = session.get(Consent, e164)
    if row is None:
        raise NotFound(f"{e164} has no recorded consent", field="phone")
    session.execute(delete(Consent).where(col(Consent.phone) == e164))
    audit.record(
        session,
        actor=actor,
        action="consent.remove",
        entity="consent",
        entity_id=e164,
        now=now,
        before=_as_dict(row),
    )
    return row


# Newest first: an index on (given_at, phone) scanned backwards (migration 0014).
CONSENT_ORDER: Final = (
    Key(col(Consent.given_at), descending=True),
    Key(col(Consent.phone), descending=True),
)


def list_consents(
    session: Session, *, after: str | None = None, limit: int = DEFAULT_PAGE
) -> tuple[list[Consent], str | None]:
    """One keyset page of consents, newest first, and the cursor of the next page."""
    return keyset_page(session, select(Consent), CONSENT_ORDER, after=after, limit=limit)


def import_consents(
    session: Session,
    path: Path,
    *,
    now: datetime,
    actor: str,
    zone: ZoneInfo,
    dry_run: bool = False,
    source: str | None = None,
) -> ConsentImportReport:
    """Record the consents of a CSV file: a phone column, optional `given_at` (dd/mm/yyyy or
    yyyy-mm-dd, a local date in `zone`, or an ISO date-time with offset; else now) and `note`.
    Bad rows are reported and skipped. One audit entry for the whole import (naming `source`,
    else the file)."""
    report = ConsentImportReport()
    roles = {"given_at": GIVEN_AT_HEADERS, "note": NOTE_HEADERS}
    write_in_chunks(
        read_phone_list(path, roles, report),
        lambda row: {
            "phone": row.phone,
            "source": ConsentSource.IMPORT.value,
            "note": note_of(row),
            "given_at": _given_at(row, now, zone),
        },
        lambda pending: _flush(session, pending, report, dry_run),
        report,
    )
    if not dry_run:
        audit_list_import(
            session,
            report,
            entity="consent",
            path=path,
            source=source,
            actor=actor,
            now=now,
            counts={"suppressed": report.suppressed},
        )
    return report


def _given_at(row: ListRow, now: datetime, zone: ZoneInfo) -> datetime:
    raw = row.cells.get("given_at", "")
    if not raw:
        return now
    column = row.headers["given_at"]
    match = _VN_DATE.fullmatch(raw)
    try:
        if match is not None:
            day, month, year = (int(part) for part in match.groups())
            when = datetime.combine(date(year, month, day), time(), zone)
        elif len(raw) == 10:
            when = datetime.combine(date.fromisoformat(raw), time(), zone)
        else:
            when = datetime.fromisoformat(raw)
            if when.tzinfo is None:
                when = when.replace(tzinfo=zone)
    except ValueError:
        raise BadCell(
            column, raw, "not a date (expected dd/mm/yyyy, yyyy-mm-dd or an ISO date-time)"
        ) from None
    if problem := out_of_range(when):
        raise BadCell(column, raw, problem)
    if when > now:
        raise BadCell(column, raw, "in the future")
    return when


def _flush(
    session: Session,
    pending: dict[str, dict[str, Any]],
    report: ConsentImportReport,
    dry_run: bool,
) -> None:
    if not pending:
        return
    phones = list(pending)
    existing = set(session.scalars(select(CONSENT.c.phone).where(CONSENT.c.phone.in_(phones))))
    report.updated += len(existing)
    report.added += len(pending) - len(existing)
    report.suppressed += (
        session.scalar(
            select(func.count()).select_from(Suppression).where(col(Suppression.phone).in_(phones))
        )
        or 0
    )
    if dry_run:
        return
    insert = upsert_insert(session.connection(), CONSENT)
    current, new = CONSENT.c, insert.excluded
    session.execute(
        insert.on_conflict_do_update(
            index_elements=[current.phone],
            set_={
                "source": new.source,
                "given_at": new.given_at,
                "note": func.coalesce(new.note, current.note),
            },
        ),
        list(pending.values()),
    )
