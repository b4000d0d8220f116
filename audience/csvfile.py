"""Reading the CSV files offices produce: UTF-8 with or without BOM, comma, semicolon or tab,
streamed row by row with the physical line where each row starts (for error reports).
Anything that is not CSV text fails with ImportFileError naming the file.

Memory stays bounded whatever the file holds: a physical line longer than `max_line_bytes` is
refused with its number before it is decoded or parsed (a 50 MB "line" is a binary or broken
file, not a list of people), and the csv module's own field limit guards quoted cells that span
lines."""

from __future__ import annotations

import codecs
import csv
import re
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import IO, Any, Final

from loa.errors import ImportFileError

# Enough to tell a binary file or a workbook from text before reading it line by line.
_SNIFF_BYTES: Final = 64 * 1024
# The default longest physical line (LOA_IMPORT_MAX_LINE_BYTES): a row of a recipient list is a
# few hundred bytes; a megabyte leaves room for long notes and still bounds memory.
DEFAULT_MAX_LINE_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CsvTable:
    header: list[str]
    rows: Iterator[tuple[int, list[str]]]  # (physical line where the row starts, cells)
    # How far the reading has got, 0 to 1 (by bytes), for a progress bar.
    done: Callable[[], float | None]


def header_key(title: str) -> str:
    """A header without accents, case or punctuation: "Số điện thoại" -> "so_dien_thoai"."""
    decomposed = unicodedata.normalize("NFD", title.strip().replace("đ", "d").replace("Đ", "D"))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    return re.sub(r"[^0-9a-z]+", "_", plain).strip("_")


@contextmanager
def read_csv(
    path: Path, *, display: str | None = None, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[CsvTable]:
    """Open a UTF-8 CSV file (with or without BOM; comma, semicolon or tab) and stream its rows.

    Blank lines are skipped. Raises ImportFileError, naming the file (as `display`, by default
    the path), when it is not CSV text or has a line longer than `max_line_bytes`.
    """
    display = display or str(path)
    try:
        handle = path.open("rb")
        size = path.stat().st_size
    except OSError as exc:
        raise ImportFileError(f"cannot open {display}: {exc.strerror or exc}") from None
    with handle:
        _check_is_text(handle.read(_SNIFF_BYTES), display)
        handle.seek(0)
        lines = _decoded_lines(handle, display, max_line_bytes)
        skipped = 0
        first = ""
        for first in lines:
            if first.strip():
                break
            skipped += 1
        if not first.strip():
            raise ImportFileError(f"{display} is empty")
        delimiter = max((",", ";", "\t"), key=first.count)
        reader = csv.reader(chain([first], lines), delimiter=delimiter)
        try:
            header = next(reader)
        except csv.Error as exc:
            raise ImportFileError(f"{display}, line {skipped + 1}: not valid CSV ({exc})") from None
        yield CsvTable(
            header=header,
            rows=_rows(reader, skipped, display),
            done=lambda: handle.tell() / size if size else None,
        )


def _check_is_text(head: bytes, display: str) -> None:
    if head.startswith(b"PK\x03\x04"):
        raise ImportFileError(
            f"{display} is a workbook (xlsx/ods), not CSV; save it as 'CSV UTF-8' first"
        )
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportFileError(f"{display} is UTF-16 text; save it as 'CSV UTF-8' first")
    if b"\x00" in head:
        raise ImportFileError(f"{display} is not a CSV file (it contains binary data)")
    if b"\r" in head and b"\n" not in head:
        # Excel for Mac's "CSV (Macintosh)" ends lines with CR alone; rows would run together.
        raise ImportFileError(
            f"{display} ends its lines with CR only (old Mac format); save it as 'CSV UTF-8'"
        )


def _decoded_lines(handle: IO[bytes], display: str, max_line_bytes: int) -> Iterator[str]:
    """The file's physical lines as text, decoded one by one so an error names the exact line.
    A line is read at most `max_line_bytes` + 1 at a time, so an endless one is refused after
    that much, never held whole."""
    number = 0
    while raw := handle.readline(max_line_bytes + 1):
        number += 1
        if len(raw) > max_line_bytes:
            raise ImportFileError(
                f"{display}, line {number}: longer than {max_line_bytes:,} bytes; a row of a "
                "recipient list is far shorter, so this is not a CSV list (the limit is "
                "LOA_IMPORT_MAX_LINE_BYTES)"
            )
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        if b"\x00" in raw:
            raise ImportFileError(
                f"{display}, line {number}: binary data (NUL byte); not a CSV file"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ImportFileError(
                f"{display}, line {number}: not UTF-8 text (perhaps Windows-1258 or TCVN3); "
                "save the file as 'CSV UTF-8'"
            ) from None
        yield text


def _rows(reader: Any, skipped: int, display: str) -> Iterator[tuple[int, list[str]]]:
    # csv.reader counts the lines it pulled (line_num), so a row starts one line after the end of
    # the previous one however many lines a quoted cell spans.
    previous_end = reader.line_num
    try:
        for cells in reader:
            start = skipped + previous_end + 1
            previous_end = reader.line_num
            # The first cell decides for almost every row, without a generator per row.
            if cells and (cells[0].strip() or any(cell.strip() for cell in cells)):
                yield start, cells
    except csv.Error as exc:
        raise ImportFileError(
            f"{display}, line {skipped + reader.line_num}: not valid CSV ({exc})"
        ) from None
