"""`loa recipients import` as a user runs it (a subprocess on SQLite and PostgreSQL): XLSX and CSV,
--column, --report, --dry-run, the progress bar on a terminal, and every file that must fail
whole with one line on stderr and nothing written."""

from __future__ import annotations

import csv
import os
import pty
import subprocess
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import func, select

from loa.db import make_engine
from loa.models import AuditEntry, Recipient
from loa.settings import Settings
from tests.clirun import LOA, loa_env, run_loa
from tests.importfiles import AREAS_CSV, PHONES, XLSX_EXTRA_PHONES, messy_xlsx


def count(db_url: str, tmp_path: Path) -> int:
    engine = make_engine(Settings(database_url=db_url, data_dir=tmp_path))
    with engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(Recipient))
    engine.dispose()
    return int(total or 0)


def phones(db_url: str, tmp_path: Path) -> list[str]:
    engine = make_engine(Settings(database_url=db_url, data_dir=tmp_path))
    with engine.connect() as conn:
        found = sorted(conn.scalars(select(Recipient.phone)))  # type: ignore[call-overload]
    engine.dispose()
    return found


def test_a_workbook_imports_with_a_report_and_no_progress_noise_in_a_pipe(
    db_url: str, tmp_path: Path
) -> None:
    env = loa_env(db_url, tmp_path)
    (tmp_path / "areas.csv").write_text(AREAS_CSV, encoding="utf-8")
    run_loa("areas", "import", str(tmp_path / "areas.csv"), env=env)
    workbook = messy_xlsx(tmp_path / "danh-sach.xlsx")
    report = tmp_path / "loi.csv"

    dry = run_loa("recipients", "import", str(workbook), "--dry-run", env=env)
    assert "would import 10 new" in dry.stdout
    assert count(db_url, tmp_path) == 0

    result = run_loa("recipients", "import", str(workbook), "--report", str(report), env=env)
    assert f"{workbook}: 18 rows read, imported 10 new and 0 updated, 7 rejected" in result.stdout
    assert "line 17, Ghi chú '=B2&\" (copy)\"': formula cell" in result.stderr
    assert "importing" not in result.stderr  # stderr is a pipe: no progress bar
    with report.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["line", "column", "value", "reason"]
    assert [r[0] for r in rows[1:]] == ["10", "13", "14", "15", "16", "17", "18"]
    assert phones(db_url, tmp_path) == sorted(PHONES + XLSX_EXTRA_PHONES)


def test_columns_are_mapped_on_the_command_line(db_url: str, tmp_path: Path) -> None:
    env = loa_env(db_url, tmp_path)
    path = tmp_path / "m.csv"
    path.write_text("Tên người;Số liên hệ\nNguyễn Văn An;0912 000 101\n", encoding="utf-8")
    refused = run_loa("recipients", "import", str(path), env=env, check=False)
    assert refused.returncode == 1
    assert "no phone column (found: Tên người, Số liên hệ)" in refused.stderr
    run_loa(
        "recipients",
        "import",
        str(path),
        "--column",
        "phone=Số liên hệ",
        "--column",
        "name=Tên người",
        env=env,
    )
    assert phones(db_url, tmp_path) == ["+84912000101"]
    bad = run_loa("recipients", "import", str(path), "--column", "phone", env=env, check=False)
    assert bad.returncode == 1
    assert (
        bad.stderr.strip()
        == "Error: column mapping 'phone': write it as ROLE=HEADER, e.g. phone=SĐT"
    )


def _formula_header(path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(['="SĐT"', "Họ tên"])
    sheet.append(["0912000101", "An"])
    workbook.save(path)


def _long_line(path: Path) -> None:
    with path.open("wb") as handle:
        handle.write(b"phone,name\n0912000101,An\n")
        for _ in range(50):
            handle.write(b"z" * (1024 * 1024))


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("empty.csv", lambda p: p.write_bytes(b"\xef\xbb\xbf\r\n"), "{p} is empty"),
        (
            "no-phone.csv",
            lambda p: p.write_text("Họ tên;Địa chỉ\nAn;Thôn 1\n", encoding="utf-8"),
            "{p}: no phone column (found: Họ tên, Địa chỉ); name it phone or so_dien_thoai, "
            "or map it: phone=HEADER",
        ),
        (
            "photo.csv",
            lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(300)),
            "{p} is not a CSV file (it contains binary data)",
        ),
        (
            "long.csv",
            _long_line,
            "{p}, line 3: longer than 1,048,576 bytes; a row of a recipient list is far shorter, "
            "so this is not a CSV list (the limit is LOA_IMPORT_MAX_LINE_BYTES)",
        ),
        (
            "dup.csv",
            lambda p: p.write_text("sdt,Ghi chú,ho_ten,Ghi chú\n0912000101,a,An,b\n", "utf-8"),
            "{p}: the header 'Ghi chú' appears more than once (columns 2 and 4); rename or "
            "remove all but one",
        ),
        (
            "formula-header.xlsx",
            _formula_header,
            "{p}, sheet 'Sheet', row 1, column A: the header is a formula cell (=\"SĐT\"); "
            "type the column names as text",
        ),
    ],
    ids=["empty", "no-phone", "binary", "50MB-line", "duplicate-header", "formula-header"],
)
def test_a_file_that_cannot_be_read_fails_in_one_line_and_writes_nothing(
    db_url: str, tmp_path: Path, name: str, make: object, message: str
) -> None:
    path = tmp_path / name
    make(path)  # type: ignore[operator]
    result = run_loa("recipients", "import", str(path), env=loa_env(db_url, tmp_path), check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: " + message.format(p=path)
    assert count(db_url, tmp_path) == 0


def test_a_formula_cell_rejects_its_row_only(db_url: str, tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["SĐT", "Họ tên"])
    sheet.append(['="0912000101"', "An"])
    sheet.append(["0912000102", "Bình"])
    workbook.save(tmp_path / "f.xlsx")
    result = run_loa(
        "recipients", "import", str(tmp_path / "f.xlsx"), env=loa_env(db_url, tmp_path)
    )
    assert "1 rejected" in result.stdout
    assert "line 2, SĐT '=\"0912000101\"': formula cell" in result.stderr
    assert phones(db_url, tmp_path) == ["+84912000102"]


def test_a_progress_bar_shows_on_a_terminal(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    path.write_text("phone\n" + "".join(f"0912{n:06d}\n" for n in range(2500)), encoding="utf-8")
    primary, secondary = pty.openpty()
    try:
        process = subprocess.run(
            [LOA, "recipients", "import", str(path)],
            env=loa_env(db_url, tmp_path),
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
            timeout=120,
            check=False,
        )
        os.close(secondary)
        secondary = -1
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    assert process.returncode == 0, shown
    assert "2500 rows read, imported 2500 new" in process.stdout
    text = shown.decode()
    assert "importing many.csv" in text and "2,500 rows" in text and "100%" in text


def test_old_numbers_follow_the_setting(db_url: str, tmp_path: Path) -> None:
    """LOA_CONVERT_OLD_NUMBERS=false: an 11-digit number from before 2018 is a rejected row."""
    path = tmp_path / "old.csv"
    path.write_text("phone,name\n01694000105,Đức\n0394000106,Hà\n", encoding="utf-8")
    env = {**loa_env(db_url, tmp_path), "LOA_CONVERT_OLD_NUMBERS": "false"}
    result = run_loa("recipients", "import", str(path), env=env)
    assert "imported 1 new and 0 updated, 1 rejected" in result.stdout
    assert "before the 2018 conversion (now 0394000105)" in result.stderr
    assert phones(db_url, tmp_path) == ["+84394000106"]
    run_loa("recipients", "import", str(path), env=loa_env(db_url, tmp_path))
    assert phones(db_url, tmp_path) == ["+84394000105", "+84394000106"]
    # Each import (not a dry run) is one audit entry with what it did.
    engine = make_engine(Settings(database_url=db_url, data_dir=tmp_path))
    with engine.connect() as conn:
        audited = conn.execute(
            select(AuditEntry.entity_id, AuditEntry.after).where(  # type: ignore[call-overload]
                AuditEntry.action == "recipients.import"
            )
        ).all()
    engine.dispose()
    assert [(e, a["inserted"], a["rejected"]) for e, a in audited] == [
        (str(path)[-64:], 1, 1),
        (str(path)[-64:], 1, 0),
    ]
