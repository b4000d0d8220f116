"""Reading the first sheet of an Excel workbook (.xlsx) as text cells, streamed row by row with
the sheet's row numbers (for error reports), in openpyxl's read-only mode so that a large sheet
is never held whole.

Cells become the text a person typing a CSV would have written: a date typed as a date becomes
an ISO date (2026-05-15), a whole number loses its ".0" (a phone typed as 912345678 stays
912345678; the phone normaliser puts the dropped 0 back). A formula or an error value (#N/A) is
not a value a person chose: its row is rejected with the reason, and nothing is computed."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final
from xml.etree.ElementTree import ParseError

from openpyxl import load_workbook
from openpyxl.utils import get_column_letter
from openpyxl.utils.exceptions import InvalidFileException

from loa.errors import ImportFileError

FORMULA_REASON: Final = (
    "formula cell ({formula}); Loa reads typed values only: copy the sheet, Paste Special > "
    "Values, and save again"
)


@dataclass(frozen=True, slots=True)
class CellProblem:
    """Why a cell cannot be read as a value; the importer rejects its row with this."""

    index: int  # 0-based column
    value: str
    reason: str


@dataclass(frozen=True, slots=True)
class SheetRow:
    line: int  # the sheet's row number; the header is usually row 1
    cells: list[str]
    problem: CellProblem | None


@dataclass(frozen=True, slots=True)
class SheetTable:
    header: list[str]
    rows: Iterator[SheetRow]
    done: Callable[[], float | None]  # 0 to 1 by rows, when the sheet says how many it has
    sheet: str
    others: list[str]  # the workbook's other sheets, which were not read


@contextmanager
def read_xlsx(
    path: Path, *, display: str | None = None, sheet_name: str | None = None
) -> Iterator[SheetTable]:
    """Open the sheet named `sheet_name` (default: the first); its first non-empty row is the
    header.

    Raises ImportFileError naming the file when it is not a readable .xlsx workbook, when it has
    no sheet of that name, when the sheet is empty, or when a header cell is a formula.
    """
    display = display or str(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ImportFileError(f"cannot open {display}: {exc.strerror or exc}") from None
    try:
        # An open file, not the path: openpyxl refuses a path by its extension, and the content
        # decides here (uploads have no name, files travel renamed).
        workbook = load_workbook(handle, read_only=True, data_only=False)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ParseError, OSError) as exc:
        handle.close()
        # KeyError: a zip without the parts of a workbook (a .docx, any other zip).
        raise ImportFileError(
            f"{display} is a zip file but not a readable Excel workbook (.xlsx) ({exc}); "
            "open it in Excel or LibreOffice and save it as .xlsx or 'CSV UTF-8'"
        ) from None
    try:
        if not workbook.worksheets:
            raise ImportFileError(f"{display} has no worksheet")
        titles = [ws.title for ws in workbook.worksheets]
        if sheet_name is None:
            sheet = workbook.worksheets[0]
        elif sheet_name in titles:
            sheet = workbook.worksheets[titles.index(sheet_name)]
        else:
            raise ImportFileError(
                f"{display} has no sheet {sheet_name!r}; its sheets are "
                + ", ".join(repr(t) for t in titles)
            )
        # The size the file declares is used for the progress bar only: some writers declare
        # A1:A1 for a full sheet, and read-only mode would stop there. Reset, read what is there.
        declared_rows = sheet.max_row if isinstance(sheet.max_row, int) else None
        sheet.reset_dimensions()
        lines = _lines(sheet.iter_rows(), display, sheet.title)
        header_line = 0
        for header_line, header_cells, problem in lines:
            if any(cell for cell in header_cells) or problem is not None:
                if problem is not None:
                    raise ImportFileError(
                        f"{display}, sheet {sheet.title!r}, row {header_line}, column "
                        f"{get_column_letter(problem.index + 1)}: the header is a "
                        f"{problem.reason.split(';')[0]}; type the column names as text"
                    )
                break
        else:
            which = "sheet" if sheet_name is not None else "first sheet"
            raise ImportFileError(f"{display} is empty (its {which} {sheet.title!r} has no rows)")
        progress = {"line": header_line}

        def rows() -> Iterator[SheetRow]:
            for line, cells, problem in lines:
                progress["line"] = line
                if problem is not None or any(cells):
                    yield SheetRow(line, cells, problem)

        def done() -> float | None:
            return min(1.0, progress["line"] / declared_rows) if declared_rows else None

        others = [title for title in titles if title != sheet.title]
        yield SheetTable(
            header=header_cells, rows=rows(), done=done, sheet=sheet.title, others=others
        )
    finally:
        workbook.close()
        handle.close()


def column_label(index: int) -> str:
    """The spreadsheet's name of a 0-based column: 0 -> A, 27 -> AB."""
    return str(get_column_letter(index + 1))


def _lines(
    sheet_rows: Iterator[tuple[Any, ...]], display: str, title: str
) -> Iterator[tuple[int, list[str], CellProblem | None]]:
    """(row number, the cells as text, the first cell that is not a value) for every row.

    openpyxl fills the rows a sheet leaves out with empty ones, so counting from 1 gives the
    sheet's row numbers after reset_dimensions(); a real cell's own row number is preferred."""
    number = 0
    try:
        for cells in sheet_rows:
            number += 1
            texts: list[str] = []
            problem: CellProblem | None = None
            for index, cell in enumerate(cells):
                row = getattr(cell, "row", None)
                if isinstance(row, int):
                    number = row
                text, reason = _cell_text(cell)
                if reason is not None and problem is None:
                    problem = CellProblem(index, text, reason)
                texts.append(text)
            yield number, texts, problem
    except (zipfile.BadZipFile, ParseError, ValueError, KeyError) as exc:
        raise ImportFileError(
            f"{display}, sheet {title!r}, after row {number}: the workbook is damaged ({exc})"
        ) from None


def _cell_text(cell: Any) -> tuple[str, str | None]:
    """A cell's value as text, and why it is not acceptable (None when it is)."""
    value = cell.value
    kind = getattr(cell, "data_type", "n")
    if value is None:
        return "", None
    if kind == "f":
        formula = str(value)
        return formula, FORMULA_REASON.format(formula=formula)
    if kind == "e":
        return str(value), f"Excel error value {value}"
    if isinstance(value, bool):
        return ("TRUE" if value else "FALSE"), None
    if isinstance(value, datetime):
        if value.time() == time(0, 0):
            return value.date().isoformat(), None
        return value.isoformat(sep=" ", timespec="seconds"), None
    if isinstance(value, date | time):
        return value.isoformat(), None
    if isinstance(value, timedelta):
        return str(value), None
    if isinstance(value, float):
        # Excel keeps every number as a double: 912345678 may come back as 912345678.0.
        return (str(int(value)) if value.is_integer() else repr(value)), None
    return str(value), None
