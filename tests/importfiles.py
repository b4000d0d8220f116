"""Messy recipient files as offices send them, generated for the import tests (CSV and XLSX), and
what an import of them must give."""

from __future__ import annotations

import unicodedata
from datetime import date
from pathlib import Path
from typing import Any, Final

import openpyxl

AREAS_CSV: Final = """\
code,name,level,parent_code
42,Tỉnh Hà Tĩnh,province,
440,Huyện Đức Thọ,district,42
18229,Thị trấn Đức Thọ,commune,440
18235,Xã Quang Vĩnh,commune,440
"""

HEADER: Final = ["Họ tên", "SĐT", "Mã xã", "Nhóm", "Ngày hết hạn thẻ", "Ghi chú"]
BINH_NFD: Final = unicodedata.normalize("NFD", "Trần Thị Bình")  # as macOS may write it
NOTE_NFD: Final = unicodedata.normalize("NFD", "hộ cận nghèo")

# (name, phone as written, area, tags, card expiry, note); line = index + 2 (header on line 1).
ROWS: Final[list[tuple[str, str, str, str, str, str]]] = [
    ("Nguyễn Văn An", "0912 345 001", "18229", "nong-dan", "15/05/2026", ""),  # 2
    (BINH_NFD, "84912345002", "18235", "ho-ngheo", "1/6/2026", NOTE_NFD),  # 3
    ("Lê Văn Cường", "+84 912 345 003", "", "", "", ""),  # 4
    ("Phạm Thị Dung", "0084912345004", "18229", "", "", ""),  # 5
    ("Hoàng Văn Em", "0912.345.005", "", "", "", ""),  # 6
    ("Vũ Thị Giang", "0912-345-006", "", "", "", ""),  # 7
    ("Đặng Văn Hải", "01694000107", "", "lao-dong-tu-do", "", ""),  # 8: old Viettel
    ("Bùi Thị Khánh", "0121 400 0108", "", "", "", ""),  # 9: old MobiFone
    ("Ủy ban xã", "02393855555", "18229", "", "", ""),  # 10: landline
    ("Nguyễn Văn An", "+84912345001", "", "ho-ngheo", "", "lần 2"),  # 11: duplicate of 2
    ("Đỗ Văn Long", "912345009", "", "", "", ""),  # 12: leading zero dropped
    ("Ngô Thị Mai", "0912345010", "", "", "31/02/2026", ""),  # 13: impossible date
    ("Không số", "", "18229", "", "", ""),  # 14: no phone
    ("Sai số", "09l2345012", "", "", "", ""),  # 15: a letter l for a 1
    ("Số lạ", "0912345013", "99999", "", "", ""),  # 16: unknown area
]

# The rejected rows of ROWS: (line, column, value, reason).
REJECTED: Final = [
    (10, "SĐT", "02393855555", "not a mobile number (landline)"),
    (13, "Ngày hết hạn thẻ", "31/02/2026", "impossible date (expected dd/mm/yyyy)"),
    (14, "SĐT", "", "phone number is missing"),
    (15, "SĐT", "09l2345012", "contains characters that are not part of a phone number"),
    (16, "Mã xã", "99999", "unknown area code"),
]
PHONES: Final = [
    "+84394000107",
    "+84794000108",
    "+84912345001",
    "+84912345002",
    "+84912345003",
    "+84912345004",
    "+84912345005",
    "+84912345006",
    "+84912345009",
]


def messy_csv(path: Path) -> Path:
    """ROWS as a semicolon CSV with a BOM and CRLF line ends, as Excel's 'CSV UTF-8' writes."""
    lines = [";".join(HEADER), *(";".join(row) for row in ROWS)]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join([*lines, ""]).encode("utf-8"))
    return path


def messy_xlsx(path: Path) -> Path:
    """ROWS as a workbook a commune officer would type: phones without a leading 0 typed as
    numbers, dates typed as dates, plus a formula row and an error value after ROWS."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Danh sách"
    sheet.append(HEADER)
    for name, phone, area, tags, expiry, note in ROWS:
        cells: list[Any] = [name, phone, area or None, tags or None, expiry or None, note or None]
        if phone == "84912345002":
            cells[1] = 84912345002  # a number: Excel shows 84912345002
        if phone == "912345009":
            cells[1] = 912345009.0  # some writers store every number as a double
        if expiry == "15/05/2026":
            cells[4] = date(2026, 5, 15)
        if area:
            cells[2] = int(area)  # area codes typed as numbers too
        sheet.append(cells)
    sheet.append(["Tính ra", "0912345017", None, None, None, '=B2&" (copy)"'])  # row 17
    sheet.append(["Lỗi", "0912345018", None, None, "#N/A", None])  # row 18
    sheet.append([])  # row 19: blank, skipped
    sheet.append(["Cuối", "0912345020", None, None, None, None])  # row 20
    workbook.save(path)
    return path


XLSX_EXTRA_REJECTED: Final = [
    (
        17,
        "Ghi chú",
        '=B2&" (copy)"',
        'formula cell (=B2&" (copy)"); Loa reads typed values only: copy the sheet, Paste '
        "Special > Values, and save again",
    ),
    (18, "Ngày hết hạn thẻ", "#N/A", "Excel error value #N/A"),
]
XLSX_EXTRA_PHONES: Final = ["+84912345020"]
