"""Recipient files in the forms offices send (CSV with BOM and semicolons, XLSX typed by hand),
column mappings, and the files that must fail whole: on SQLite and PostgreSQL."""

from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import Engine

import audience.importer
from audience.areas import import_areas
from audience.importer import import_recipients, parse_column_mapping
from loa.db import session_scope
from loa.errors import ImportFileError, InvalidInput
from tests.importfiles import (
    AREAS_CSV,
    PHONES,
    REJECTED,
    XLSX_EXTRA_PHONES,
    XLSX_EXTRA_REJECTED,
    messy_csv,
    messy_xlsx,
)
from tests.test_import import NOW, recipient_dates, recipients, tags, write


def load_areas(engine: Engine, tmp_path: Path) -> None:
    with session_scope(engine) as session:
        import_areas(session, write(tmp_path, "areas.csv", AREAS_CSV))


def run_import(engine: Engine, path: Path, **options: object) -> audience.importer.ImportReport:
    with session_scope(engine) as session:
        return import_recipients(session, path, now=NOW, **options)  # type: ignore[arg-type]


def rejected(report: audience.importer.ImportReport) -> list[tuple[int, str, str, str]]:
    return [(e.line, e.column, e.value, e.reason) for e in report.rejected]


def test_a_messy_csv_with_every_phone_form_imports_the_good_rows(
    engine: Engine, tmp_path: Path
) -> None:
    load_areas(engine, tmp_path)
    report = run_import(engine, messy_csv(tmp_path / "danh-sach.csv"))

    assert rejected(report) == REJECTED
    assert (report.rows_read, report.inserted, report.updated, report.converted) == (15, 9, 0, 2)
    found = recipients(engine)
    assert sorted(found) == PHONES
    binh = found["+84912345002"]
    assert binh.name == "Trần Thị Bình"  # NFD in the file, NFC stored
    assert binh.attributes == {"Ngày hết hạn thẻ": "2026-06-01", "Ghi chú": "hộ cận nghèo"}
    assert found["+84394000107"].phone_converted and found["+84794000108"].phone_converted
    an = found["+84912345001"]  # lines 2 and 11: one recipient, merged
    assert an.area_code == "18229"
    assert an.attributes == {"Ngày hết hạn thẻ": "2026-05-15", "Ghi chú": "lần 2"}
    assert tags(engine)["+84912345001"] == {"nong-dan", "ho-ngheo"}
    assert recipient_dates(engine)[("+84912345001", "Ngày hết hạn thẻ")] == "2026-05-15"


def test_a_hand_typed_workbook_imports_like_its_csv(engine: Engine, tmp_path: Path) -> None:
    load_areas(engine, tmp_path)
    report = run_import(engine, messy_xlsx(tmp_path / "danh-sach.xlsx"))

    # The same rows rejected at the same (sheet row) numbers, plus the formula and the #N/A.
    assert rejected(report) == sorted(REJECTED + XLSX_EXTRA_REJECTED)
    assert (report.rows_read, report.inserted, report.converted) == (18, 10, 2)
    found = recipients(engine)
    assert sorted(found) == sorted(PHONES + XLSX_EXTRA_PHONES)
    # 84912345002 and 912345009.0 typed as numbers; 18235 typed as a number; a date cell.
    assert found["+84912345002"].area_code == "18235"
    assert found["+84912345002"].name == "Trần Thị Bình"
    assert found["+84912345001"].attributes["Ngày hết hạn thẻ"] == "2026-05-15"
    assert recipient_dates(engine)[("+84912345001", "Ngày hết hạn thẻ")] == "2026-05-15"
    assert "+84912345017" not in found  # its row had a formula: rejected whole


def test_the_reader_is_chosen_by_content_not_by_name(engine: Engine, tmp_path: Path) -> None:
    load_areas(engine, tmp_path)
    workbook = messy_xlsx(tmp_path / "a.xlsx").rename(tmp_path / "looks-like.csv")
    text = messy_csv(tmp_path / "b.csv").rename(tmp_path / "looks-like.xlsx")
    assert run_import(engine, workbook, dry_run=True).inserted == 10
    assert run_import(engine, text, dry_run=True).inserted == 9


def test_an_explicit_mapping_picks_columns_the_guess_would_not(
    engine: Engine, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "m.csv",
        "Tên người,Số liên hệ,Điện thoại nhà,Nhãn\n"
        "Nguyễn Văn An,0912000101,0912999999,nong-dan|ho-ngheo\n",
    )
    with pytest.raises(ImportFileError, match=r"m\.csv: no phone column .*map it: phone=HEADER"):
        run_import(engine, path)

    columns = parse_column_mapping(["phone=Số liên hệ", "name=tên người", "tags=Nhãn"])
    report = run_import(engine, path, columns=columns)
    assert (report.inserted, report.rejected) == (1, [])
    an = recipients(engine)["+84912000101"]
    # "Điện thoại nhà" looks like a phone, but the phone was given: it stays an attribute.
    assert (an.name, an.attributes) == ("Nguyễn Văn An", {"Điện thoại nhà": "0912999999"})
    assert tags(engine) == {"+84912000101": {"nong-dan", "ho-ngheo"}}


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["phone"], r"'phone': write it as ROLE=HEADER"),
        (["email=Thư"], r"'email' is not one of phone, name, area, tags"),
        (["phone=A", "sdt=B"], r"phone is given twice \('A' and 'B'\)"),
    ],
)
def test_a_bad_mapping_is_refused(pairs: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_column_mapping(pairs)


def test_a_mapping_to_a_missing_or_shared_header_fails_before_any_row(
    engine: Engine, tmp_path: Path
) -> None:
    path = write(tmp_path, "m.csv", "SĐT,Họ tên\n0912000101,An\n")
    with pytest.raises(ImportFileError, match=r"no column 'Điện thoại' for the phone \(found: SĐT"):
        run_import(engine, path, columns={"phone": "Điện thoại"})
    with pytest.raises(ImportFileError, match=r"column 'SĐT' is given as both phone and name"):
        run_import(engine, path, columns={"phone": "SĐT", "name": "sdt"})
    assert recipients(engine) == {}


def test_duplicate_headers_are_refused_naming_the_columns(engine: Engine, tmp_path: Path) -> None:
    decomposed = "Ghi chu\u0301"  # "Ghi chú" in NFD: the same header once normalised
    csv_path = write(tmp_path, "d.csv", f"phone,Ghi chú,name,{decomposed}\n0912000101,a,An,b\n")
    with pytest.raises(
        ImportFileError,
        match=r"d\.csv: the header 'Ghi chú' appears more than once \(columns 2 and 4\)",
    ):
        run_import(engine, csv_path)

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["SĐT", "Họ tên", "Mã xã", "Họ tên"])
    sheet.append(["0912000101", "An", None, "Bình"])
    workbook.save(tmp_path / "d.xlsx")
    with pytest.raises(
        ImportFileError,
        match=r"d\.xlsx: the header 'Họ tên' appears more than once \(columns B and D\)",
    ):
        run_import(engine, tmp_path / "d.xlsx")
    assert recipients(engine) == {}


def test_a_50_mb_line_is_refused_with_its_number_in_bounded_memory(
    engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "one-line.csv"
    with path.open("wb") as handle:
        handle.write(b"phone,name\n0912000101,An\n0912000102,")
        for _ in range(50):
            handle.write(b"x" * (1024 * 1024))
        handle.write(b"\n")

    tracemalloc.start()
    try:
        with pytest.raises(ImportFileError, match=r"one-line\.csv, line 3: longer than 1,048,576"):
            run_import(engine, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The line is read at most one limit (1 MiB) at a time, never whole (50 MiB).
    assert peak < 8 * 1024 * 1024, peak
    assert recipients(engine) == {}  # the good row before it is not written either


def test_a_fatal_error_after_chunks_were_written_leaves_nothing(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audience.importer, "CHUNK_SIZE", 2)
    good = "".join(f"09120001{n:02d},Người {n}\n" for n in range(1, 9))
    path = tmp_path / "late.csv"
    path.write_bytes(b"phone,name\n" + good.encode() + b"0912000199," + "Đào".encode("cp1258"))
    progress: list[tuple[int, float | None]] = []
    with pytest.raises(ImportFileError, match=r"late\.csv, line 10: not UTF-8 text"):
        run_import(engine, path, progress=lambda rows, done: progress.append((rows, done)))
    assert [rows for rows, _ in progress] == [2, 4, 6, 8]  # four chunks went to the database
    assert recipients(engine) == {}  # and were rolled back with the one transaction


def test_progress_is_told_after_each_chunk_and_at_the_end(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audience.importer, "CHUNK_SIZE", 3)
    path = write(tmp_path, "p.csv", "phone\n" + "".join(f"09120002{n:02d}\n" for n in range(10)))
    seen: list[tuple[int, float | None]] = []
    run_import(engine, path, progress=lambda rows, done: seen.append((rows, done)))
    assert [rows for rows, _ in seen] == [3, 6, 9, 10]
    fractions = [done if done is not None else -1.0 for _, done in seen]
    assert fractions == sorted(fractions) and fractions[0] > 0 and fractions[-1] == 1.0


def _workbook(tmp_path: Path, rows: list[list[object]], name: str = "w.xlsx") -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    workbook.save(tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: _workbook(p, []), r"w\.xlsx is empty \(its first sheet 'Sheet' has no rows\)"),
        (
            lambda p: _workbook(p, [["Họ tên", "Ghi chú"], ["An", "x"]]),
            r"w\.xlsx: no phone column \(found: Họ tên, Ghi chú\)",
        ),
        (
            lambda p: _workbook(p, [["SĐT", '=UPPER("ho ten")'], ["0912000101", "An"]]),
            r"w\.xlsx, sheet 'Sheet', row 1, column B: the header is a formula cell",
        ),
        (lambda p: _zip(p, "w.xlsx", "word/document.xml"), r"w\.xlsx is a zip file but not a"),
        (
            lambda p: _zip(
                p, "w.xlsx", "mimetype", b"application/vnd.oasis.opendocument.spreadsheet"
            ),
            r"w\.xlsx is an OpenDocument spreadsheet \(\.ods\)",
        ),
        (
            lambda p: _raw(p, "w.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500)),
            r"w\.xls is an Excel 97-2003 \(\.xls\) or password-protected workbook",
        ),
        (
            lambda p: _raw(p, "w.csv", bytes(range(256)) * 40),
            r"w\.csv is not a CSV file \(it contains binary data\)",
        ),
        (lambda p: _raw(p, "w.csv", b""), r"w\.csv is empty"),
    ],
)
def test_files_that_are_not_recipient_lists_fail_whole(
    engine: Engine, tmp_path: Path, make: object, message: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ImportFileError, match=message):
        run_import(engine, path)
    assert recipients(engine) == {}


def _zip(tmp_path: Path, name: str, member: str, data: bytes = b"<x/>") -> Path:
    with zipfile.ZipFile(tmp_path / name, "w") as archive:
        archive.writestr(member, data)
    return tmp_path / name


def _raw(tmp_path: Path, name: str, data: bytes) -> Path:
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


def test_a_workbook_sheet_is_chosen_by_name_and_the_others_are_reported(
    engine: Engine, tmp_path: Path
) -> None:
    """One sheet per village is a common layout: the first is read by default and the others are
    named in the report (never silently left out); --sheet reads another; a wrong name or a
    sheet asked of a CSV fails whole."""
    load_areas(engine, tmp_path)
    workbook = openpyxl.Workbook()
    first = workbook.active
    assert first is not None
    first.title = "Thôn 1"
    first.append(["SĐT", "Họ tên"])
    first.append(["0912000101", "An"])
    second = workbook.create_sheet("Thôn 2")
    second.append(["SĐT", "Họ tên"])
    second.append(["0912000102", "Bình"])
    second.append(["0912000103", "Chi"])
    path = tmp_path / "xa.xlsx"
    workbook.save(path)

    report = run_import(engine, path)
    assert (report.inserted, report.unread_sheets) == (1, ["Thôn 2"])
    report = run_import(engine, path, sheet="Thôn 2")
    assert (report.inserted, report.unread_sheets) == (2, ["Thôn 1"])
    assert set(recipients(engine)) == {"+84912000101", "+84912000102", "+84912000103"}

    with pytest.raises(
        ImportFileError, match=r"xa\.xlsx has no sheet 'Thôn 3'; its sheets are 'Thôn 1', 'Thôn 2'"
    ):
        run_import(engine, path, sheet="Thôn 3")
    csv_path = write(tmp_path, "a.csv", "phone\n0912000104\n")
    with pytest.raises(ImportFileError, match=r"a\.csv is a CSV file, which has no sheets"):
        run_import(engine, csv_path, sheet="Thôn 1")
    assert "+84912000104" not in recipients(engine)
