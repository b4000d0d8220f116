"""Reading lists keyed by phone number (suppression lists, consent lists) from CSV or XLSX files
(the recipient importer's readers, chosen by content).

The phone column is found as the recipient importer finds it (same header spellings); a list may
also have a few named columns of its own (reason, note, ...). Other columns are ignored and
named in the report. Rows come out one by one with their line number; a row whose phone number
is not a Vietnamese mobile number is rejected with the reason, as in the recipient import.
"""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from sqlmodel import Session

from audience.csvfile import header_key
from audience.importer import PHONE_HEADERS, RowError
from audience.phones import InvalidPhone, normalize_phone
from audience.sourcefile import open_table
from loa import audit
from loa.errors import ImportFileError

CHUNK_SIZE: Final = 1000
NOTE_HEADERS: Final = frozenset({"note", "notes", "ghi_chu", "comment"})
NOTE_MAX: Final = 500  # the width of suppression.note and consent.note


@dataclass
class ListImportReport:
    rows_read: int = 0
    added: int = 0  # numbers that were not on the list (would not be, on a dry run)
    updated: int = 0  # numbers already on the list
    rejected: list[RowError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    def write_csv(self, path: Path) -> None:
        """The rejected rows as line,column,value,reason (with a BOM, for Excel's sake)."""
        with path.open("w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["line", "column", "value", "reason"])
            writer.writerows((e.line, e.column, e.value, e.reason) for e in self.rejected)


@dataclass(frozen=True, slots=True)
class ListRow:
    line: int
    phone: str  # E.164
    cells: Mapping[str, str]  # role -> value (NFC, stripped; "" when empty or absent)
    headers: Mapping[str, str]  # role -> the header as written, for error reports


class BadCell(Exception):
    """A cell that a list's own parser refuses; becomes a RowError."""

    def __init__(self, column: str, value: str, reason: str) -> None:
        super().__init__(reason)
        self.column, self.value, self.reason = column, value, reason


def read_phone_list(
    path: Path,
    roles: Mapping[str, frozenset[str]],
    report: ListImportReport,
    *,
    allow_converted: bool = True,
) -> Iterator[ListRow]:
    """The rows of a phone list with a valid phone number; the others go to `report.rejected`.

    `roles` names the list's own columns (role -> accepted header spellings after header_key()).
    Raises ImportFileError when the file is neither CSV nor XLSX, has no phone column, or names a
    role twice.
    """
    display = str(path)
    with open_table(path, display=display) as table:
        header = [unicodedata.normalize("NFC", h.strip()) for h in table.header]
        columns = _map_columns(header, {"phone": PHONE_HEADERS, **roles}, display, report)
        for line, cells, problem in table.rows:
            report.rows_read += 1
            if problem is not None:  # a workbook cell that is not a value (a formula)
                title = header[problem.index] if problem.index < len(header) else ""
                report.rejected.append(RowError(line, title, problem.value, problem.reason))
                continue
            extra = [c for c in cells[len(header) :] if c.strip()]
            if extra:
                report.rejected.append(
                    RowError(
                        line, "", extra[0], f"more cells than the header has columns ({len(cells)})"
                    )
                )
                continue
            values = {
                role: unicodedata.normalize("NFC", cells[index].strip())
                if index < len(cells)
                else ""
                for role, index in columns.items()
            }
            phone_header = header[columns["phone"]]
            raw_phone = values.pop("phone")
            if not raw_phone:
                report.rejected.append(RowError(line, phone_header, "", "phone number is missing"))
                continue
            try:
                phone = normalize_phone(raw_phone, allow_converted=allow_converted)
            except InvalidPhone as exc:
                report.rejected.append(RowError(line, phone_header, raw_phone, exc.reason))
                continue
            yield ListRow(
                line=line,
                phone=phone.e164,
                cells=values,
                headers={role: header[index] for role, index in columns.items()},
            )


def _map_columns(
    header: list[str],
    roles: Mapping[str, frozenset[str]],
    display: str,
    report: ListImportReport,
) -> dict[str, int]:
    found: dict[str, int] = {}
    for index, title in enumerate(header):
        if not title:
            continue  # spreadsheets leave unnamed trailing columns behind
        key = header_key(title)
        role = next((role for role, names in roles.items() if key in names), None)
        if role is None:
            report.ignored_columns.append(title)
        elif role in found:
            raise ImportFileError(
                f"{display}: columns {header[found[role]]!r} and {title!r} both look like the "
                f"{role} column; rename one of them"
            )
        else:
            found[role] = index
    if "phone" not in found:
        names = ", ".join(h for h in header if h) or "none"
        raise ImportFileError(
            f"{display}: no phone column (found: {names}); name it phone or so_dien_thoai"
        )
    return found


def write_in_chunks(
    rows: Iterable[ListRow],
    values_of: Callable[[ListRow], dict[str, Any]],
    write: Callable[[dict[str, dict[str, Any]]], None],
    report: ListImportReport,
) -> None:
    """Turn each row into the values of its table row and `write` them CHUNK_SIZE numbers at a
    time; a row whose own cells are refused (BadCell) is reported. A number listed twice: its
    last row wins."""
    pending: dict[str, dict[str, Any]] = {}
    for row in rows:
        try:
            pending[row.phone] = values_of(row)
        except BadCell as bad:
            report.rejected.append(RowError(row.line, bad.column, bad.value, bad.reason))
            continue
        if len(pending) >= CHUNK_SIZE:
            write(pending)
            pending.clear()
    write(pending)


def audit_list_import(
    session: Session,
    report: ListImportReport,
    *,
    entity: str,
    path: Path,
    source: str | None,
    actor: str,
    now: datetime,
    counts: Mapping[str, int],
) -> None:
    """One audit entry for a whole list import (not a dry run): the file (`source`, else the
    path) and what it did; `counts` are the list's own figures beside the common ones."""
    audit.record(
        session,
        actor=actor,
        action=f"{entity}.import",
        entity=entity,
        entity_id=(source or path.name)[:64],
        now=now,
        after={
            "file": source or str(path),
            "rows_read": report.rows_read,
            "added": report.added,
            "updated": report.updated,
            **counts,
            "rejected": len(report.rejected),
        },
    )


def note_of(row: ListRow) -> str | None:
    """The row's note, if the list has a note column; refused when too long to store."""
    note = row.cells.get("note") or None
    if note is not None and len(note) > NOTE_MAX:
        raise BadCell(row.headers["note"], note, f"longer than {NOTE_MAX} characters")
    return note
