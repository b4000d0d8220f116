"""One table whatever the file: a CSV text or an Excel workbook, told apart by their content (a
workbook is a zip file), not by the name, since office files travel renamed and uploads have none.

Both readers give a header and rows of text cells with the line (CSV: physical line; XLSX: sheet
row) where each row starts, and refuse what they cannot read with ImportFileError naming the file.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from audience.csvfile import DEFAULT_MAX_LINE_BYTES, read_csv
from audience.xlsxfile import CellProblem, column_label, read_xlsx
from loa.errors import ImportFileError

_ZIP: Final = b"PK\x03\x04"
_OLE: Final = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003 .xls, or an encrypted .xlsx
_ODS_MIMETYPE: Final = b"application/vnd.oasis.opendocument"

Row = tuple[int, list[str], CellProblem | None]


@dataclass(frozen=True, slots=True)
class SourceTable:
    kind: str  # "csv" or "xlsx"
    header: list[str]
    rows: Iterator[Row]
    done: Callable[[], float | None]  # how far the reading has got, 0 to 1, when known
    column_label: Callable[[int], str]  # how the file's reader names a 0-based column
    unread_sheets: list[str]  # a workbook's sheets other than the one read


@contextmanager
def open_table(
    path: Path,
    *,
    display: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    sheet: str | None = None,
) -> Iterator[SourceTable]:
    """The file as one table; `sheet` names a workbook's sheet (default: its first)."""
    display = display or str(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(128)
    except OSError as exc:
        raise ImportFileError(f"cannot open {display}: {exc.strerror or exc}") from None
    if head.startswith(_OLE):
        raise ImportFileError(
            f"{display} is an Excel 97-2003 (.xls) or password-protected workbook; remove the "
            "password and save it as .xlsx or 'CSV UTF-8'"
        )
    if head.startswith(_ZIP):
        if _ODS_MIMETYPE in head:
            raise ImportFileError(
                f"{display} is an OpenDocument spreadsheet (.ods); save it as .xlsx or 'CSV UTF-8'"
            )
        if not zipfile.is_zipfile(path):
            raise ImportFileError(f"{display} starts like a zip file (.xlsx) but is damaged")
        with read_xlsx(path, display=display, sheet_name=sheet) as table:
            yield SourceTable(
                kind="xlsx",
                header=table.header,
                rows=((r.line, r.cells, r.problem) for r in table.rows),
                done=table.done,
                column_label=column_label,
                unread_sheets=table.others,
            )
        return
    if sheet is not None:
        raise ImportFileError(f"{display} is a CSV file, which has no sheets (asked for {sheet!r})")
    with read_csv(path, display=display, max_line_bytes=max_line_bytes) as table:
        yield SourceTable(
            kind="csv",
            header=table.header,
            rows=((line, cells, None) for line, cells in table.rows),
            done=table.done,
            column_label=lambda index: str(index + 1),
            unread_sheets=[],
        )
