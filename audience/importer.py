"""Importing recipients from the CSV and Excel files province offices keep, streamed and upserted
in chunks.

A bad row is reported and skipped; a file that cannot be read at all (not CSV or XLSX, no phone
column, a duplicate header, a line too long, a damaged workbook) fails as a whole. The columns are
checked before the first row is read; an error found later in the file (a line that is not UTF-8,
a damaged part of a workbook) raises after some chunks were written, and since the whole import
runs in the caller's one transaction (session_scope), those chunks are rolled back with it:
either the file is imported with its report, or nothing is.
"""

from __future__ import annotations

import csv
import gc
import io
import re
import sys
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from json.encoder import encode_basestring as _json_string
from pathlib import Path
from typing import Any, Final, TextIO

import psycopg
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    String,
    TextClause,
    any_,
    bindparam,
    delete,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlmodel import Session, SQLModel

from audience.csvfile import DEFAULT_MAX_LINE_BYTES, header_key
from audience.phones import InvalidPhone, normalize_phone
from audience.sourcefile import open_table
from loa import audit
from loa.db import upsert_insert
from loa.errors import ImportFileError, InvalidInput
from loa.models import Area, Recipient, RecipientDate

# Rows per write. Large enough that a chunk's fixed costs (a few statements, a COPY) vanish,
# small enough that a chunk's rows stay a few MB. 20,000 rather than 10,000: 1.5 s less for a
# fresh import of a million rows and 1 s less again, for 18 MB more peak memory (235 MB).
CHUNK_SIZE: Final = 20_000

RECIPIENT: Final = SQLModel.metadata.tables[Recipient.__tablename__]
RECIPIENT_DATE: Final = SQLModel.metadata.tables[RecipientDate.__tablename__]
AREA: Final = SQLModel.metadata.tables[Area.__tablename__]

# Header spellings seen in office spreadsheets, compared after header_key() (no accents, no case).
PHONE_HEADERS: Final = frozenset(
    {
        "phone",
        "phone_number",
        "mobile",
        "so_dien_thoai",
        "sdt",
        "so_dt",
        "dien_thoai",
        "di_dong",
        "so_di_dong",
    }
)
NAME_HEADERS: Final = frozenset({"name", "full_name", "ho_ten", "ho_va_ten"})
AREA_HEADERS: Final = frozenset({"area_code", "commune_code", "ma_xa"})
TAG_HEADERS: Final = frozenset({"tags", "tag", "nhom"})
TAG_SEPARATOR: Final = "|"
# The roles a column can play, and the headers each is guessed from; every other column is an
# attribute named by its header.
ROLE_HEADERS: Final[Mapping[str, frozenset[str]]] = {
    "phone": PHONE_HEADERS,
    "name": NAME_HEADERS,
    "area": AREA_HEADERS,
    "tags": TAG_HEADERS,
}

# An arbitrary constant naming "a recipient import" among the database's advisory locks.
IMPORT_LOCK: Final = 0x10A51A9
# Told after each chunk: rows read so far, and how far through the file (0 to 1) when known.
Progress = Callable[[int, "float | None"], None]

_NAME_MAX: Final = 200  # the width of recipient.name
_TAG_MAX: Final = 64  # a tag's length (recipient.tags)
_ATTRIBUTE_KEY_MAX: Final = 200  # recipient_date.attribute
_VN_DATE: Final = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})", re.ASCII)
_ISO_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


@dataclass(frozen=True, slots=True)
class RowError:
    line: int  # physical line in the source file where the row starts; the header is line 1
    column: str  # the header as written in the file, "" when the problem is the row itself
    value: str
    reason: str


@dataclass(slots=True)
class ImportReport:
    rows_read: int = 0
    inserted: int = 0  # recipients that did not exist before (would not, on a dry run)
    updated: int = 0  # recipients that existed and were merged with the file
    rejected: list[RowError] = field(default_factory=list)
    converted: int = 0  # accepted rows whose old 11-digit number was converted
    unread_sheets: list[str] = field(default_factory=list)  # a workbook's other sheets

    def write_csv(self, path: Path) -> None:
        """The rejected rows, for the office to fix. With a BOM so that Excel shows the accents."""
        with path.open("w", encoding="utf-8-sig", newline="") as handle:
            self.write_rows(handle)

    def csv_bytes(self) -> bytes:
        """The same report as write_csv() writes, as bytes (for an HTTP answer)."""
        text = io.StringIO(newline="")
        self.write_rows(text)
        return text.getvalue().encode("utf-8-sig")

    def write_rows(self, handle: TextIO) -> None:
        writer = csv.writer(handle)
        writer.writerow(["line", "column", "value", "reason"])
        writer.writerows((e.line, e.column, e.value, e.reason) for e in self.rejected)


@dataclass(slots=True)
class _Row:
    phone: str
    name: str | None
    area_code: str | None
    carrier: str | None
    converted: bool
    attributes: dict[str, str]
    tags: set[str]

    def merge(self, later: _Row) -> None:
        """Fold a later row of the same phone in: its values win, tags are united."""
        self.name = later.name if later.name is not None else self.name
        self.area_code = later.area_code if later.area_code is not None else self.area_code
        self.carrier, self.converted = later.carrier, later.converted
        self.attributes.update(later.attributes)
        self.tags |= later.tags


@dataclass(frozen=True, slots=True)
class _Columns:
    phone: int
    name: int | None
    area: int | None
    tags: int | None
    attributes: Sequence[tuple[int, str]]  # (index, key) of every other named column
    header: Sequence[str]


class _BadRow(Exception):
    def __init__(self, column: str, value: str, reason: str) -> None:
        super().__init__(reason)
        self.column, self.value, self.reason = column, value, reason


def parse_column_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """`ROLE=HEADER` pairs (`phone=SĐT`, `name=Họ tên`) as {role: header}. A role may be named
    as itself or by any header it is guessed from (`so_dien_thoai=Số ĐT` is the phone)."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        role_text, sep, header = pair.partition("=")
        key = header_key(role_text)
        role = next((r for r, names in ROLE_HEADERS.items() if key == r or key in names), None)
        if not sep or not header.strip():
            raise InvalidInput(
                f"column mapping {pair!r}: write it as ROLE=HEADER, e.g. phone=SĐT",
                field="column",
            )
        if role is None:
            raise InvalidInput(
                f"column mapping {pair!r}: {role_text.strip()!r} is not one of "
                f"{', '.join(ROLE_HEADERS)} (other columns become attributes under their header)",
                field="column",
            )
        if role in mapping:
            raise InvalidInput(
                f"column mapping: {role} is given twice ({mapping[role]!r} and {header!r})",
                field="column",
            )
        mapping[role] = unicodedata.normalize("NFC", header.strip())
    return mapping


def import_recipients(
    session: Session,
    path: Path,
    *,
    now: datetime,
    dry_run: bool = False,
    allow_converted: bool = True,
    columns: Mapping[str, str] | None = None,
    display: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    progress: Progress | None = None,
    sheet: str | None = None,
) -> ImportReport:
    """Upsert the recipients of a CSV or XLSX file by phone number, merging attributes and tags.

    The reader is chosen by the file's content. `columns` maps roles to headers (see
    parse_column_mapping); roles it leaves out are guessed from the headers. `sheet` names the
    sheet of a workbook (default: the first; the others are listed in the report, so that a
    workbook of one sheet per village is not half imported unnoticed). `display` names the
    file in messages (default: the path). The file is streamed and written in chunks of
    CHUNK_SIZE rows, so its size is not limited by memory (only the set of phones already seen
    and the list of rejected rows grow with it). With `dry_run` the same validation runs and the
    counts are what an import would do; nothing is written. Raises ImportFileError when the file
    cannot be read as a recipient list at all.
    """
    if now.tzinfo is None:
        raise InvalidInput("import time must be timezone-aware")
    report = ImportReport()
    if not dry_run and session.connection().dialect.name == "postgresql":
        # Recipient imports run one at a time (a second waits for the first to commit): the
        # merge relies on it (see _pg_merge), and the counts of new and updated stay exact.
        # SQLite has one writer at a time anyway.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": IMPORT_LOCK})
    known_areas = set(session.scalars(select(AREA.c.code)))
    pending: dict[str, _Row] = {}
    display = display or str(path)
    with (
        _import_runtime(),
        _ChunkWriter(session, now, dry_run, report) as writer,
        open_table(path, display=display, max_line_bytes=max_line_bytes, sheet=sheet) as table,
    ):
        report.unread_sheets = table.unread_sheets
        mapped = _map_columns(table.header, display, columns or {}, table.column_label)
        for line, cells, problem in table.rows:
            report.rows_read += 1
            if problem is not None:  # a cell the reader could not take as a value (a formula)
                title = _title(mapped, problem.index) if problem.index < len(mapped.header) else ""
                report.rejected.append(RowError(line, title, problem.value, problem.reason))
                continue
            try:
                row = _parse_row(cells, mapped, known_areas, allow_converted)
            except _BadRow as bad:
                report.rejected.append(RowError(line, bad.column, bad.value, bad.reason))
                continue
            report.converted += row.converted
            earlier = pending.get(row.phone)
            if earlier is None:
                pending[row.phone] = row
            else:
                earlier.merge(row)
            if len(pending) >= CHUNK_SIZE:
                writer.write(pending.values())
                pending.clear()
                if progress is not None:
                    progress(report.rows_read, table.done())
        writer.write(pending.values())
    if progress is not None:
        progress(report.rows_read, 1.0)
    return report


# The interpreter's settings while an import runs (both are the process's, shared with its other
# threads, and restored when the last import of the process ends):
# - The cyclic garbage collector's first threshold. An import allocates about ten containers a
#   row (the cells, the row, its attributes and tags) that reference counting frees, few
#   cycles; at the default (700) the collector ran every 70 rows and, each time the chunk of
#   pending rows had moved to the older generations, walked every live object of the process: a
#   quarter of the reading's CPU (10.4 s -> 7.7 s for a million rows with it raised).
#   Collections still run, a hundred times less often; cyclic garbage stays bounded.
# - The GIL's switch interval. The writer thread waits on the server and needs the GIL back
#   each time psycopg wakes up for its socket, while the reading thread, busy parsing, keeps it
#   for up to the interval (5 ms by default) each time: the writer spent most of its time
#   waiting for the GIL, and the server for the writer. At 0.2 ms a fresh import of a million
#   rows took 15.7 s instead of 21.4 s, again 9.3 s instead of 14.4 s (1 ms: 21.3 and 13.7 s;
#   0.05 ms: no better than 0.2; docs/benchmarks.md).
_IMPORT_GC_THRESHOLD: Final = 70_000
_IMPORT_SWITCH_INTERVAL: Final = 0.0002
_runtime_lock = threading.Lock()
_runtime_users = 0
_runtime_saved: tuple[tuple[int, int, int], float] = ((0, 0, 0), 0.0)


@contextmanager
def _import_runtime() -> Iterator[None]:
    """The collector's threshold raised and the switch interval shortened for the import's
    duration; restored when the last import of the process ends."""
    global _runtime_users, _runtime_saved
    with _runtime_lock:
        if _runtime_users == 0:
            threshold, interval = gc.get_threshold(), sys.getswitchinterval()
            _runtime_saved = (threshold, interval)
            gc.set_threshold(max(_IMPORT_GC_THRESHOLD, threshold[0]), *threshold[1:])
            sys.setswitchinterval(min(_IMPORT_SWITCH_INTERVAL, interval))
        _runtime_users += 1
    try:
        yield
    finally:
        with _runtime_lock:
            _runtime_users -= 1
            if _runtime_users == 0:
                gc.set_threshold(*_runtime_saved[0])
                sys.setswitchinterval(_runtime_saved[1])


def audit_import(
    session: Session, report: ImportReport, *, actor: str, source: str, now: datetime
) -> None:
    """One audit entry for a whole import (not a dry run): who, which file, what it did."""
    audit.record(
        session,
        actor=actor,
        action="recipients.import",
        entity="recipient",
        entity_id=source[-64:],
        now=now,
        after={
            "file": source,
            "rows_read": report.rows_read,
            "inserted": report.inserted,
            "updated": report.updated,
            "converted": report.converted,
            "rejected": len(report.rejected),
        },
    )


def _map_columns(
    header: Sequence[str],
    display: str,
    explicit: Mapping[str, str],
    label: Callable[[int], str],
) -> _Columns:
    """Which column plays which role: the ones `explicit` names, then the rest guessed from the
    headers. Refuses a header written twice (which of the two would win is anyone's guess), two
    columns that both look like one role, and a mapping that names a header the file lacks."""
    titles = [unicodedata.normalize("NFC", raw.strip()) for raw in header]
    places: dict[str, list[int]] = {}
    for index, title in enumerate(titles):
        if title:  # spreadsheets leave unnamed trailing columns behind
            places.setdefault(title, []).append(index)
    for title, indexes in places.items():
        if len(indexes) > 1:
            where = " and ".join(label(i) for i in indexes)
            raise ImportFileError(
                f"{display}: the header {title!r} appears more than once (columns {where}); "
                "rename or remove all but one"
            )
    found = ", ".join(t for t in titles if t) or "none"

    roles: dict[str, int] = {}
    for given, wanted in explicit.items():
        place = _find_header(titles, wanted)
        if place is None:
            raise ImportFileError(
                f"{display}: no column {wanted!r} for the {given} (found: {found})", field="column"
            )
        taken = next((r for r, i in roles.items() if i == place), None)
        if taken is not None:
            raise ImportFileError(
                f"{display}: column {titles[place]!r} is given as both {taken} and {given}",
                field="column",
            )
        roles[given] = place

    attributes: list[tuple[int, str]] = []
    for index, title in enumerate(titles):
        if not title or index in roles.values():
            continue
        key = header_key(title)
        role = next((r for r, names in ROLE_HEADERS.items() if key in names), None)
        if role is not None and role not in explicit:
            if role in roles:
                raise ImportFileError(
                    f"{display}: columns {titles[roles[role]]!r} ({label(roles[role])}) and "
                    f"{title!r} ({label(index)}) both look like the {role} column; rename one "
                    f"of them, or map it: {role}=HEADER"
                )
            roles[role] = index
        else:
            # Not a role, or a role already given explicitly (a second phone column, say):
            # kept as an attribute under its header.
            attributes.append((index, title))
    if "phone" not in roles:
        raise ImportFileError(
            f"{display}: no phone column (found: {found}); name it phone or so_dien_thoai, "
            "or map it: phone=HEADER"
        )
    return _Columns(
        phone=roles["phone"],
        name=roles.get("name"),
        area=roles.get("area"),
        tags=roles.get("tags"),
        attributes=attributes,
        header=titles,
    )


def _find_header(titles: Sequence[str], wanted: str) -> int | None:
    """The column headed `wanted`: written the same (after NFC), else the one column whose header
    is the same without accents, case or punctuation ("sdt" finds "SĐT")."""
    if wanted in titles:
        return titles.index(wanted)
    key = header_key(wanted)
    matches = [i for i, title in enumerate(titles) if title and header_key(title) == key]
    return matches[0] if len(matches) == 1 else None


def _parse_row(
    cells: Sequence[str], columns: _Columns, known_areas: set[str], allow_converted: bool
) -> _Row:
    def cell(index: int | None) -> str:
        if index is None or index >= len(cells):
            return ""
        value = cells[index].strip()
        # ASCII is already NFC; the check costs a tenth of normalize() on the phones, codes and
        # dates that make up most cells.
        return value if value.isascii() else unicodedata.normalize("NFC", value)

    extra = [c for c in cells[len(columns.header) :] if c.strip()]
    if extra:
        raise _BadRow("", extra[0], f"more cells than the header has columns ({len(cells)})")

    raw_phone = cell(columns.phone)
    phone_header = columns.header[columns.phone]
    if not raw_phone:
        raise _BadRow(phone_header, "", "phone number is missing")
    try:
        phone = normalize_phone(raw_phone, allow_converted=allow_converted)
    except InvalidPhone as exc:
        raise _BadRow(phone_header, raw_phone, exc.reason) from None

    name = cell(columns.name) or None
    if name is not None and len(name) > _NAME_MAX:
        raise _BadRow(_title(columns, columns.name), name, f"longer than {_NAME_MAX} characters")

    area_code = cell(columns.area) or None
    if area_code is not None and area_code not in known_areas:
        raise _BadRow(_title(columns, columns.area), area_code, "unknown area code")

    tags: set[str] = set()
    for tag in cell(columns.tags).split(TAG_SEPARATOR):
        tag = tag.strip()
        if len(tag) > _TAG_MAX:
            raise _BadRow(
                _title(columns, columns.tags), tag, f"tag longer than {_TAG_MAX} characters"
            )
        if tag:
            tags.add(tag)

    attributes: dict[str, str] = {}
    for index, key in columns.attributes:
        value = cell(index)
        if value:
            attributes[key] = _attribute_value(key, value)

    return _Row(
        phone=phone.e164,
        name=name,
        area_code=area_code,
        carrier=phone.carrier,
        converted=phone.converted,
        attributes=attributes,
        tags=tags,
    )


def _title(columns: _Columns, index: int | None) -> str:
    return columns.header[index] if index is not None else ""


def _attribute_value(key: str, value: str) -> str:
    """A Vietnamese date (dd/mm/yyyy) becomes ISO so that templates and triggers can compute.
    A value already written as an ISO date must be a real one: it is indexed as a date."""
    stored, problem = _stored_value(value)
    if problem is not None:
        raise _BadRow(key, value, problem)
    return stored


@lru_cache(maxsize=8192)
def _stored_value(value: str) -> tuple[str, str | None]:
    """(the value as stored, why it is refused or None). Cached: a list's dates repeat (a few
    hundred expiry days among a million rows), and parsing one costs more than the lookup."""
    if _ISO_DATE.fullmatch(value):
        try:
            date.fromisoformat(value)
        except ValueError:
            return value, "impossible date (expected yyyy-mm-dd)"
        return value, None
    match = _VN_DATE.fullmatch(value)
    if match is None:
        return value, None
    day, month, year = (int(part) for part in match.groups())
    try:
        return date(year, month, day).isoformat(), None
    except ValueError:
        return value, "impossible date (expected dd/mm/yyyy)"


class _ChunkWriter:
    """Writes the chunks of an import, counting inserts and updates into the report.

    On PostgreSQL a chunk is written by a thread of its own while the next one is read and
    checked: the server merges one chunk while Python parses the next, so the two cores work at
    once (the thread mostly waits on the server, without the GIL). At most one chunk is in
    flight, which bounds memory, and the connection is only ever used by one thread at a time:
    the reading side does not touch the session until the writer is done. SQLite writes inline:
    its connections belong to the thread that opened them.
    """

    def __init__(self, session: Session, now: datetime, dry_run: bool, report: ImportReport):
        self._session, self._now, self._dry_run, self._report = session, now, dry_run, report
        # Phones written by earlier chunks: a phone repeated far apart in the file is one
        # recipient, counted once. Stored as integers to keep a large import's memory down.
        self._seen: set[int] = set()
        threaded = not dry_run and session.connection().dialect.name == "postgresql"
        self._executor = ThreadPoolExecutor(1, "loa-import-write") if threaded else None
        # The chunk being written and the writer's answer: the phones it inserted.
        self._in_flight: tuple[list[_Row], Future[set[str]]] | None = None
        self._first = True  # the first chunk creates the transaction's temporary table

    def write(self, rows: Iterable[_Row]) -> None:
        batch = list(rows)  # the caller reuses its dict for the next chunk
        if not batch:
            return
        if self._executor is None:
            self._count(batch, _flush(self._session, batch, self._now, self._dry_run))
            return
        # Everything Python can do for the chunk is done here, on the reading thread, while the
        # writer waits on the server with the chunk before: the writer's own Python work keeps
        # the server idle.
        chunk = _pg_chunk(batch)
        self._wait()
        first, self._first = self._first, False
        future = self._executor.submit(
            _write_postgresql, self._session.connection(), chunk, self._now, first=first
        )
        self._in_flight = (batch, future)

    def _wait(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            batch, future = in_flight
            # result() re-raises the writer's error here, in the reading thread.
            self._count(batch, future.result())

    def _count(self, batch: Sequence[_Row], new: set[str]) -> None:
        """Inserts and updates into the report; a phone repeated far apart in the file is one
        recipient, counted once."""
        for row in batch:
            number = int(row.phone[1:])
            if number in self._seen:
                continue  # already counted for an earlier chunk
            self._seen.add(number)
            if row.phone in new:
                self._report.inserted += 1
            else:
                self._report.updated += 1

    def __enter__(self) -> _ChunkWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                self._wait()
            elif self._in_flight is not None:
                # The reading side failed: let the chunk in flight end before the caller rolls
                # back on the same connection; the reading error is the one to report.
                wait([self._in_flight[1]])
        finally:
            if self._executor is not None:
                self._executor.shutdown()


def _flush(session: Session, batch: Sequence[_Row], now: datetime, dry_run: bool) -> set[str]:
    """SQLite's write of a chunk, and the dry run's check on both databases: the phones that
    were not there before."""
    bind = session.connection()
    # Asked before writing so that a dry run can tell what an import would do.
    phones = [row.phone for row in batch]
    existing = set(bind.execute(select(RECIPIENT.c.phone).where(_phone_in(phones, bind))).scalars())
    if not dry_run:
        ids = _upsert_recipients(session, batch, now)
        _replace_dates(bind, batch, ids)
    return {phone for phone in phones if phone not in existing}


def _phone_in(phones: Sequence[str], bind: Connection) -> ColumnElement[bool]:
    """`recipient.phone IN phones`; on PostgreSQL one array parameter (see loa.db.id_in)."""
    if bind.dialect.name == "postgresql":
        return RECIPIENT.c.phone == any_(bindparam(None, list(phones), ARRAY(String())))
    return RECIPIENT.c.phone.in_(phones)


# PostgreSQL: each chunk is copied into a temporary table and merged by one set-based statement.
# Row-by-row parameters cost more in the client than the statements cost the server: psycopg
# parses every multi-row VALUES statement anew (too long for its cache), and each recipient's
# tags and dates were further rows of parameters. COPY sends the chunk as one stream.
_PG_BATCH: Final = "loa_import_batch"
_PG_CREATE_BATCH: Final = text(
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_PG_BATCH} ("
    "phone text PRIMARY KEY, name text, area_code text, carrier text, "
    "phone_converted boolean NOT NULL, attributes jsonb NOT NULL, tags text NOT NULL) "
    "ON COMMIT DROP"
)
_PG_COPY_BATCH: Final = (
    f"COPY {_PG_BATCH} (phone, name, area_code, carrier, phone_converted, attributes, tags) "
    "FROM STDIN"
)
# An attribute value in ISO form is a real date: _attribute_value has checked it (see _ISO_DATE).
_PG_ISO: Final = "'^[0-9]{4}-[0-9]{2}-[0-9]{2}$'"
# A recipient's tags united with the file's, distinct and sorted by code point (as Python sorts
# them for a new recipient, whatever the database's collation); unchanged when the file adds none.
_PG_MERGED_TAGS: Final = """CASE WHEN excluded.tags <@ r.tags THEN r.tags
                ELSE ARRAY(SELECT DISTINCT t COLLATE "C" FROM unnest(r.tags || excluded.tags) AS t
                           ORDER BY 1) END"""


# One statement per chunk: the merge of _upsert_recipients (tags included), then the dates of
# _replace_dates, joined to the new ids in the server; it answers with the phones it inserted.
def _pg_merge(undate: bool) -> TextClause:
    # Removing dates costs a probe of recipient_date per recipient: skipped when no value of the
    # chunk is a non-date (as in a fresh import of dated lists).
    undated = f""",
    undated AS (
        DELETE FROM recipient_date AS d USING written, jsonb_each_text(written.attributes) AS e
        WHERE NOT written.inserted
            AND d.recipient_id = written.id AND d.attribute = e.key AND e.value !~ {_PG_ISO}
    )"""
    return text(
        f"""
    WITH upserted AS (
        INSERT INTO recipient AS r (phone, name, area_code, carrier, phone_converted, attributes,
            tags, created_at, updated_at)
        SELECT phone, name, area_code, carrier, phone_converted, attributes,
            string_to_array(tags, '{TAG_SEPARATOR}'), :now, :now
        FROM {_PG_BATCH}
        ON CONFLICT (phone) DO UPDATE SET
            name = coalesce(excluded.name, r.name),
            area_code = coalesce(excluded.area_code, r.area_code),
            carrier = excluded.carrier,
            phone_converted = excluded.phone_converted,
            attributes = r.attributes || excluded.attributes,
            tags = {_PG_MERGED_TAGS},
            updated_at = excluded.updated_at
        -- A row the file does not change is left alone: no new row version, no index entries,
        -- no WAL (a monthly re-export of the same list changes few rows).
        WHERE (r.name, r.area_code, r.carrier, r.phone_converted, r.attributes)
            IS DISTINCT FROM (coalesce(excluded.name, r.name),
                coalesce(excluded.area_code, r.area_code), excluded.carrier,
                excluded.phone_converted, r.attributes || excluded.attributes)
            OR NOT excluded.tags <@ r.tags
        -- xmax is 0 on a row version that this statement inserted, and our transaction's id
        -- on one it updated: the usual way to tell the two apart in an upsert's RETURNING.
        RETURNING r.id, r.phone, r.xmax = 0 AS inserted
    ),
    -- The recipients the upsert wrote: only their dates can have changed (recipient_date
    -- follows the attributes, and an unchanged row's attributes already hold the file's values).
    written AS (
        SELECT u.id, u.inserted, b.attributes
        FROM upserted AS u JOIN {_PG_BATCH} AS b ON b.phone = u.phone
    ){undated if undate else ""},
    written_dates AS (
        SELECT written.id, written.inserted, e.key, CAST(e.value AS date) AS value
        FROM written, jsonb_each_text(written.attributes) AS e
        WHERE e.value ~ {_PG_ISO} AND length(e.key) <= {_ATTRIBUTE_KEY_MAX}
    ),
    -- A new recipient has no dates yet (ids are never reused): a plain insert, without the
    -- arbiter index probe and speculative insertion that ON CONFLICT costs on every row.
    dated_new AS (
        INSERT INTO recipient_date (recipient_id, attribute, value)
        SELECT id, key, value FROM written_dates WHERE inserted
    ),
    dated AS (
        INSERT INTO recipient_date AS d (recipient_id, attribute, value)
        SELECT id, key, value FROM written_dates WHERE NOT inserted
        ON CONFLICT (recipient_id, attribute) DO UPDATE SET value = excluded.value
        WHERE d.value IS DISTINCT FROM excluded.value
    )
    SELECT phone FROM upserted WHERE inserted
    """
    )


_PG_MERGE: Final = _pg_merge(undate=True)
_PG_MERGE_DATES_ONLY: Final = _pg_merge(undate=False)


@dataclass(frozen=True)
class _PgChunk:
    """A chunk ready for PostgreSQL: its COPY text, and whether a value of it is not a date."""

    copy_text: str
    undate: bool


def _pg_chunk(batch: Sequence[_Row]) -> _PgChunk:
    """Made by the reading thread, while the writer waits on the server with the chunk before:
    made by the writer, it kept the server idle while the reading side, done with its chunk,
    waited on the writer (docs/benchmarks.md, recipient import).

    The text is built directly rather than with psycopg's write_row(), which adapts each value
    in Python (a JSON dump, a list to an array literal) at several times the cost. Tags travel as
    one string, sorted (the order recipient.tags keeps): TAG_SEPARATOR cannot occur inside a
    tag."""
    lines = [
        f"{row.phone}\t{_copy_text(row.name)}\t{_copy_text(row.area_code)}\t"
        f"{_copy_text(row.carrier)}\t{'t' if row.converted else 'f'}\t"
        f"{_copy_json(row.attributes)}\t"
        f"{_copy_text(TAG_SEPARATOR.join(sorted(row.tags)))}\n"
        for row in batch
    ]
    undate = any(not _ISO_DATE.fullmatch(v) for row in batch for v in row.attributes.values())
    return _PgChunk("".join(lines), undate)


def _write_postgresql(bind: Connection, chunk: _PgChunk, now: datetime, *, first: bool) -> set[str]:
    """Write a chunk; return the phones that were not there before."""
    if first:
        # Dropped at the transaction's end (an earlier import in the same transaction may have
        # made it: emptied below all the same).
        bind.execute(_PG_CREATE_BATCH)
    bind.execute(text(f"TRUNCATE {_PG_BATCH}"))
    driver = bind.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    with driver.cursor() as cursor, cursor.copy(_PG_COPY_BATCH) as copy:
        copy.write(chunk.copy_text)
    # A temporary table has no statistics until analysed: the planner would guess its size and
    # read the whole recipient table once per chunk instead of looking the phones up. The phone
    # column alone is enough for that (the joins are on it), and costs a sixth of analysing all
    # seven columns (the JSON ones above all): 0.4 s instead of 2.6 s of the server's CPU for a
    # million rows.
    bind.execute(text(f"ANALYZE {_PG_BATCH} (phone)"))
    merge = _PG_MERGE if chunk.undate else _PG_MERGE_DATES_ONLY
    return set(bind.execute(merge, {"now": now}).scalars())


# COPY's text format: a backslash, tab, newline or carriage return inside a value is escaped.
_COPY_ESCAPES: Final = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_SPECIAL: Final = re.compile(r"[\\\t\n\r]")


def _copy_text(value: str | None) -> str:
    if value is None:
        return "\\N"
    # Most values have nothing to escape; a search is several times cheaper than translate().
    return value if _COPY_SPECIAL.search(value) is None else value.translate(_COPY_ESCAPES)


def _copy_json(attributes: dict[str, str]) -> str:
    """The attributes as a JSON object in COPY's text format. json's own string quoting (in C)
    without the encoder object around it, which cost several times more for these small flat
    objects of strings; quoted JSON has no raw tab or newline, so only backslashes need COPY's
    escaping."""
    members = ",".join([_json_string(k) + ":" + _json_string(v) for k, v in attributes.items()])
    return "{" + members.replace("\\", "\\\\") + "}"


def _replace_dates(bind: Connection, batch: Sequence[_Row], ids: dict[str, int]) -> None:
    """Keep recipient_date in step with the attributes each row sets: a date is written or moved,
    a value that is no longer a date removes its row; attributes a row leaves empty keep their
    date, as the attributes merge keeps their value."""
    gone = [
        {"recipient_id": ids[row.phone], "attribute": key}
        for row in batch
        for key, value in row.attributes.items()
        if not _ISO_DATE.fullmatch(value)
    ]
    if gone:
        bind.execute(
            delete(RECIPIENT_DATE).where(
                RECIPIENT_DATE.c.recipient_id == bindparam("recipient_id"),
                RECIPIENT_DATE.c.attribute == bindparam("attribute"),
            ),
            gone,
        )
    rows = [
        {"recipient_id": ids[row.phone], "attribute": key, "value": date.fromisoformat(value)}
        for row in batch
        for key, value in row.attributes.items()
        if _ISO_DATE.fullmatch(value) and len(key) <= _ATTRIBUTE_KEY_MAX
    ]
    if rows:
        upsert = upsert_insert(bind, RECIPIENT_DATE)
        bind.execute(
            upsert.on_conflict_do_update(
                index_elements=[RECIPIENT_DATE.c.recipient_id, RECIPIENT_DATE.c.attribute],
                set_={"value": upsert.excluded.value},
            ),
            rows,
        )


# SQLite's union of the stored tags and the file's, distinct and in code-point order (BINARY
# collation of UTF-8), as minified JSON like json() gives the stored value. json_group_array
# takes the rows in the order the subquery gives them.
_SQLITE_MERGED_TAGS: Final[ColumnElement[Any]] = literal_column(
    "(SELECT json_group_array(value) FROM (SELECT value FROM json_each(recipient.tags) "
    "UNION SELECT value FROM json_each(excluded.tags) ORDER BY value))"
)


def _upsert_recipients(session: Session, batch: Sequence[_Row], now: datetime) -> dict[str, int]:
    """SQLite's merge (PostgreSQL's is _pg_merge): the recipients' ids by phone."""
    insert = upsert_insert(session.connection(), RECIPIENT)
    current, new = RECIPIENT.c, insert.excluded
    # RFC 7396 merge patch; it would delete keys whose new value is null, but the importer never
    # stores null (empty cells are skipped). json() gives the stored text in the same minified
    # form, so an unchanged document compares equal.
    merged = {
        "name": func.coalesce(new.name, current.name),
        "area_code": func.coalesce(new.area_code, current.area_code),
        "carrier": new.carrier,
        "phone_converted": new.phone_converted,
        "attributes": func.json_patch(current.attributes, new.attributes),
        "tags": _SQLITE_MERGED_TAGS,
    }
    stored = {
        **{key: current[key] for key in merged},
        "attributes": func.json(current.attributes),
        "tags": func.json(current.tags),
    }
    upsert = insert.on_conflict_do_update(
        index_elements=[current.phone],
        set_={**merged, "updated_at": new.updated_at},
        # As on PostgreSQL, a row the file does not change is left alone (updated_at too).
        where=or_(*(stored[key].is_distinct_from(value) for key, value in merged.items())),
    ).returning(current.id, current.phone)
    # A list of parameter sets makes this an executemany: the statement is compiled once and
    # cached, and SQLAlchemy's "insertmanyvalues" sends the rows as multi-row VALUES batches.
    # (Building one VALUES clause of a thousand rows by hand costs more to compile than to run.)
    result = session.execute(
        upsert,
        [
            {
                "phone": row.phone,
                "name": row.name,
                "area_code": row.area_code,
                "carrier": row.carrier,
                "phone_converted": row.converted,
                "attributes": row.attributes,
                "tags": sorted(row.tags),
                "created_at": now,
                "updated_at": now,
            }
            for row in batch
        ],
    )
    ids = {phone: id_ for id_, phone in result}
    unchanged = [row.phone for row in batch if row.phone not in ids]
    if unchanged:
        bind = session.connection()
        ids.update(
            (phone, id_)
            for id_, phone in bind.execute(
                select(RECIPIENT.c.id, RECIPIENT.c.phone).where(_phone_in(unchanged, bind))
            )
        )
    return ids
