"""Area and recipient imports against the real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import col, select

import audience.importer
from audience.areas import AreaImportResult, import_areas
from audience.importer import ImportReport, RowError, import_recipients
from loa.db import session_scope
from loa.errors import ImportFileError, InvalidInput
from loa.models import Area, Recipient, RecipientDate

NOW = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)
LATER = datetime(2026, 5, 9, 1, 0, tzinfo=UTC)
DEMO = Path(__file__).resolve().parent.parent / "demo"

PROVINCE_ONLY = "code,name,level,parent_code\n42,Tỉnh Hà Tĩnh,province,\n"

AREAS = """\
code,name,level,parent_code
42,Tỉnh Hà Tĩnh,province,
436,Thành phố Hà Tĩnh,district,42
440,Huyện Đức Thọ,district,42
18073,Phường Nam Hà,commune,436
18229,Thị trấn Đức Thọ,commune,440
18235,Xã Quang Vĩnh,commune,440
"""


def write(tmp_path: Path, name: str, text: str, *, bom: bool = False, crlf: bool = False) -> Path:
    path = tmp_path / name
    data = text.replace("\n", "\r\n") if crlf else text
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"))
    return path


def load_areas(engine: Engine, tmp_path: Path) -> None:
    with session_scope(engine) as session:
        import_areas(session, write(tmp_path, "areas.csv", AREAS))


def recipients(engine: Engine) -> dict[str, Recipient]:
    with session_scope(engine) as session:
        return {r.phone: r for r in session.exec(select(Recipient))}


def tags(engine: Engine) -> dict[str, set[str]]:
    with session_scope(engine) as session:
        rows = session.exec(select(Recipient.phone, Recipient.tags))
        found: dict[str, set[str]] = {}
        for phone, stored in rows:
            # Stored distinct and sorted (the importer's invariant), whichever database.
            assert list(stored) == sorted(set(stored)), (phone, stored)
            if stored:
                found[phone] = set(stored)
        return found


def import_file(
    engine: Engine,
    path: Path,
    *,
    now: datetime = NOW,
    dry_run: bool = False,
    allow_converted: bool = True,
) -> ImportReport:
    with session_scope(engine) as session:
        return import_recipients(
            session, path, now=now, dry_run=dry_run, allow_converted=allow_converted
        )


# --- areas --------------------------------------------------------------------------------------


def test_area_paths_follow_parents_later_in_the_file_and_in_the_database(
    engine: Engine, tmp_path: Path
) -> None:
    with session_scope(engine) as session:
        first = import_areas(session, write(tmp_path, "a.csv", PROVINCE_ONLY))
    assert first == AreaImportResult(rows_read=1, inserted=1, updated=0, unchanged=0)

    # The commune comes before its district, the district's parent is only in the database;
    # the header has another case and order, and the file a BOM and semicolons.
    second = write(
        tmp_path,
        "b.csv",
        "Level;Code;Parent_Code;Name\ncommune;18229;440;Thị trấn Đức Thọ\n"
        "district;440;42;Huyện Đức Thọ\nprovince;42;;Tỉnh Hà Tĩnh\n",
        bom=True,
    )
    with session_scope(engine) as session:
        result = import_areas(session, second)
    assert result == AreaImportResult(rows_read=3, inserted=2, updated=0, unchanged=1)
    with session_scope(engine) as session:
        paths = {a.code: (a.path, a.parent_code, a.level) for a in session.exec(select(Area))}
    assert paths == {
        "42": ("/42/", None, "province"),
        "440": ("/42/440/", "42", "district"),
        "18229": ("/42/440/18229/", "440", "commune"),
    }


def test_moving_an_area_rewrites_the_paths_of_its_descendants_in_the_database(
    engine: Engine, tmp_path: Path
) -> None:
    load_areas(engine, tmp_path)
    moved = write(
        tmp_path,
        "moved.csv",
        "code,name,level,parent_code\n99,Tỉnh Thử,province,\n440,Huyện Đức Thọ,district,99\n",
    )
    with session_scope(engine) as session:
        result = import_areas(session, moved)
    # 440 moved; 18229 and 18235 are not in the file but live under it.
    assert result == AreaImportResult(rows_read=2, inserted=1, updated=3, unchanged=0)
    with session_scope(engine) as session:
        paths = {a.code: a.path for a in session.exec(select(Area))}
    assert paths["18229"] == "/99/440/18229/"
    assert paths["18235"] == "/99/440/18235/"
    assert paths["18073"] == "/42/436/18073/"


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ("440,Huyện Đức Thọ,huyen,42\n", r"line 3: level 'huyen' of 440 is not one of"),
        ("440,Huyện Đức Thọ,district,\n", r"line 3: district 440 needs a parent_code"),
        ("440,Huyện Đức Thọ,district,41\n", r"line 3: parent_code 41 of 440 is neither in this"),
        (
            "440,Huyện Đức Thọ,district,441\n441,Huyện Khác,district,440\n",
            r"line 3: parent_code forms a cycle: 440 -> 441 -> 440",
        ),
        (
            "18229,Thị trấn Đức Thọ,commune,18235\n18235,Xã Quang Vĩnh,commune,42\n",
            r"line 3: commune 18229 cannot be under commune 18235",
        ),
        ("42/1,Sai,district,42\n", r"line 3: code '42/1' is not 1 to 16 letters"),
        ("43,Tỉnh Khác,province,42\n", r"line 3: province 43 cannot have a parent_code"),
        ("42,Tỉnh Hà Tĩnh lần hai,province,\n", r"line 3: code 42 is already on line 2"),
    ],
)
def test_a_bad_area_row_fails_the_whole_file_and_writes_nothing(
    engine: Engine, tmp_path: Path, rows: str, problem: str
) -> None:
    path = write(tmp_path, "bad-areas.csv", PROVINCE_ONLY + rows)
    with (
        pytest.raises(InvalidInput, match=r"bad-areas\.csv, " + problem),
        session_scope(engine) as session,
    ):
        import_areas(session, path)
    with session_scope(engine) as session:
        assert session.exec(select(func.count()).select_from(Area)).one() == 0


def test_an_area_file_without_the_columns_names_what_it_found(
    engine: Engine, tmp_path: Path
) -> None:
    path = write(tmp_path, "xa.csv", "ma,ten\n42,Hà Tĩnh\n")
    expected = r"xa\.csv: missing column code, name, level, parent_code.*\(found: ma, ten\)"
    with pytest.raises(ImportFileError, match=expected), session_scope(engine) as session:
        import_areas(session, path)


def test_the_demo_files_import(engine: Engine) -> None:
    with session_scope(engine) as session:
        areas = import_areas(session, DEMO / "areas.csv")
        report = import_recipients(session, DEMO / "recipients.csv", now=NOW)
    assert areas.inserted == 13
    assert (report.rows_read, report.inserted, report.converted) == (20, 18, 1)
    assert [(e.line, e.column, e.reason) for e in report.rejected] == [
        (20, "Số điện thoại", "not a mobile number (landline)"),
        (21, "Số điện thoại", "contains characters that are not part of a phone number"),
    ]
    found = recipients(engine)
    assert found["+84912000101"].attributes == {
        "card_expiry": "2026-05-15",
        "dia_chi": "Thôn Trung Thượng",
    }
    assert tags(engine)["+84983000102"] == {"nong-dan", "ho-ngheo"}


# --- recipients ---------------------------------------------------------------------------------


def test_mixed_formats_with_bom_semicolons_and_vietnamese_headers(
    engine: Engine, tmp_path: Path
) -> None:
    load_areas(engine, tmp_path)
    decomposed_name = unicodedata.normalize("NFD", "Trần Thị Bình")  # as macOS may write it
    path = write(
        tmp_path,
        "danh-sach.csv",
        "Họ tên;SĐT;Mã xã;Nhóm;Ngày sinh;Ghi chú\n"
        "Nguyễn Văn An;0912 345 678;18229;nong-dan;1/5/1970;\n"
        f"{decomposed_name};+84 (98) 300-0102;18235;nong-dan | ho-ngheo;;hộ cận nghèo\n"
        "Lê Văn Cường;0084.866.000.103;;;;\n"
        "Hoàng Văn Đức;01694000105;18073;lao-dong-tu-do;;\n",
        bom=True,
        crlf=True,
    )
    report = import_file(engine, path)

    assert (report.rows_read, report.inserted, report.updated, report.converted) == (4, 4, 0, 1)
    assert report.rejected == []
    found = recipients(engine)
    assert sorted(found) == ["+84394000105", "+84866000103", "+84912345678", "+84983000102"]
    an = found["+84912345678"]
    assert (an.name, an.area_code, an.carrier, an.phone_converted) == (
        "Nguyễn Văn An",
        "18229",
        "Vinaphone",
        False,
    )
    assert an.attributes == {"Ngày sinh": "1970-05-01"}
    assert an.created_at == NOW and an.updated_at == NOW
    assert found["+84983000102"].name == "Trần Thị Bình"  # stored NFC
    assert found["+84983000102"].attributes == {"Ghi chú": "hộ cận nghèo"}
    assert found["+84866000103"].area_code is None and found["+84866000103"].attributes == {}
    assert found["+84394000105"].phone_converted is True
    assert tags(engine) == {
        "+84912345678": {"nong-dan"},
        "+84983000102": {"nong-dan", "ho-ngheo"},
        "+84394000105": {"lao-dong-tu-do"},
    }


def test_bad_rows_are_reported_at_their_physical_line_and_good_rows_land(
    engine: Engine, tmp_path: Path
) -> None:
    load_areas(engine, tmp_path)
    path = write(
        tmp_path,
        "mixed.csv",
        "phone,name,area_code,dia_chi,card_expiry\n"  # 1
        '0912000101,An,18229,"Thôn 1\nXã Quang Vĩnh\nHuyện Đức Thọ",\n'  # 2-4
        ",Bình,18229,,\n"  # 5: no phone
        "\n"  # 6: blank
        "02393855555,Ủy ban xã,18229,,\n"  # 7: landline
        '0912000102,"Cường\n(con ông Ba)",99999,,\n'  # 8-9: unknown area
        "0912000103,Dung,18229,,31/02/2026\n"  # 10: impossible date
        "0912000104,Hà,18229,,,thừa\n"  # 11: more cells than columns
        "0912000105,Hùng,,,15/05/2026\n",  # 12: good
    )
    report = import_file(engine, path)

    assert report.rejected == [
        RowError(5, "phone", "", "phone number is missing"),
        RowError(7, "phone", "02393855555", "not a mobile number (landline)"),
        RowError(8, "area_code", "99999", "unknown area code"),
        RowError(10, "card_expiry", "31/02/2026", "impossible date (expected dd/mm/yyyy)"),
        RowError(11, "", "thừa", "more cells than the header has columns (6)"),
    ]
    assert (report.rows_read, report.inserted, report.updated) == (7, 2, 0)
    found = recipients(engine)
    assert sorted(found) == ["+84912000101", "+84912000105"]
    assert found["+84912000101"].attributes == {"dia_chi": "Thôn 1\nXã Quang Vĩnh\nHuyện Đức Thọ"}
    assert found["+84912000105"].attributes == {"card_expiry": "2026-05-15"}


def test_reimport_merges_attributes_and_tags_and_counts_updates(
    engine: Engine, tmp_path: Path
) -> None:
    load_areas(engine, tmp_path)
    first = write(
        tmp_path,
        "first.csv",
        "phone,name,area_code,tags,card_expiry,nghe\n"
        "0912000101,Nguyễn Văn An,18229,nong-dan,15/05/2026,làm ruộng\n"
        "0912000102,Trần Thị Bình,18235,ho-ngheo,,\n",
    )
    assert import_file(engine, first).inserted == 2

    second = write(
        tmp_path,
        "second.csv",
        "sdt,ho_ten,ma_xa,nhom,card_expiry,so_con\n"
        "+84912000101,Nguyễn Văn An (Đội 2),,ho-ngheo|nong-dan,15/05/2027,3\n"
        "0912000103,Lê Văn Cường,18073,,,\n"
        "0912000102,,,nong-dan,,\n",
    )
    report = import_file(engine, second, now=LATER)

    assert (report.rows_read, report.inserted, report.updated) == (3, 1, 2)
    an = recipients(engine)["+84912000101"]
    assert an.name == "Nguyễn Văn An (Đội 2)"
    assert an.area_code == "18229"  # not given the second time: kept
    assert an.attributes == {"card_expiry": "2027-05-15", "nghe": "làm ruộng", "so_con": "3"}
    assert (an.created_at, an.updated_at) == (NOW, LATER)
    binh = recipients(engine)["+84912000102"]
    # Only a tag was added: name and area kept. The tags are part of the row (recipient.tags),
    # so updated_at moves, and a relative wave's occurrence sees a newly tagged recipient.
    assert (binh.name, binh.area_code, binh.updated_at) == ("Trần Thị Bình", "18235", LATER)
    assert tags(engine) == {
        "+84912000101": {"nong-dan", "ho-ngheo"},
        "+84912000102": {"ho-ngheo", "nong-dan"},
    }


def test_a_phone_repeated_in_one_file_becomes_one_recipient(engine: Engine, tmp_path: Path) -> None:
    load_areas(engine, tmp_path)
    path = write(
        tmp_path,
        "dup.csv",
        "phone,name,area_code,tags,nghe,ghi_chu\n"
        "0912000101,An,18229,nong-dan,làm ruộng,lần 1\n"
        "+84 912 000 101,Nguyễn Văn An,,ho-ngheo,,lần 2\n",
    )
    report = import_file(engine, path)
    assert (report.rows_read, report.inserted, report.updated) == (2, 1, 0)
    an = recipients(engine)["+84912000101"]
    assert (an.name, an.area_code) == ("Nguyễn Văn An", "18229")
    assert an.attributes == {"nghe": "làm ruộng", "ghi_chu": "lần 2"}
    assert tags(engine) == {"+84912000101": {"nong-dan", "ho-ngheo"}}


def test_chunks_count_each_recipient_once_even_when_a_phone_repeats_across_chunks(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audience.importer, "CHUNK_SIZE", 2)
    lines = [f"09120001{n:02d},Người {n},t{n}" for n in range(1, 8)] + ["0912000101,Người 1,t99"]
    path = write(tmp_path, "many.csv", "phone,name,tags\n" + "\n".join(lines) + "\n")
    report = import_file(engine, path)
    assert (report.rows_read, report.inserted, report.updated) == (8, 7, 0)
    assert len(recipients(engine)) == 7
    assert tags(engine)["+84912000101"] == {"t1", "t99"}

    again = import_file(engine, path, dry_run=True)
    assert (again.inserted, again.updated) == (0, 7)


def test_old_numbers_are_rejected_rows_when_conversion_is_not_allowed(
    engine: Engine, tmp_path: Path
) -> None:
    path = write(tmp_path, "old.csv", "phone,name\n01694000105,Đức\n0394000106,Hà\n")
    report = import_file(engine, path, allow_converted=False)
    assert report.converted == 0 and report.inserted == 1
    assert report.rejected == [
        RowError(
            2,
            "phone",
            "01694000105",
            "old 11-digit number from before the 2018 conversion (now 0394000105)",
        )
    ]


def test_a_dry_run_validates_and_counts_but_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    load_areas(engine, tmp_path)
    import_file(engine, write(tmp_path, "base.csv", "phone,name,nghe\n0912000101,An,làm ruộng\n"))
    path = write(
        tmp_path,
        "next.csv",
        "phone,name,tags,area_code,nghe\n"
        "0912000101,An mới,nong-dan,18229,buôn bán\n"
        "0912000102,Bình,ho-ngheo,18229,\n"
        "0912000103,Cường,,00000,\n",
    )
    report = import_file(engine, path, dry_run=True, now=LATER)

    assert (report.rows_read, report.inserted, report.updated) == (3, 1, 1)
    assert [e.line for e in report.rejected] == [4]
    found = recipients(engine)
    assert list(found) == ["+84912000101"]
    an = found["+84912000101"]
    assert (an.name, an.attributes, an.updated_at) == ("An", {"nghe": "làm ruộng"}, NOW)
    assert tags(engine) == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", r"not a CSV file \(it contains binary"),
        (b"PK\x03\x04\x14\x00\x06\x00", r"starts like a zip file \(\.xlsx\) but is damaged"),
        (b"", r"is empty"),
        (b"\xef\xbb\xbf\r\n\n", r"is empty"),
        (
            b"phone,name\n0912000101,An\n0912000102," + "Đào".encode("cp1258") + b"\n",
            r", line 3: not UTF-8 text",
        ),
        (
            "Họ tên,Địa chỉ,Ghi chú\nAn,Thôn 1,\n".encode(),
            r": no phone column \(found: Họ tên, Địa chỉ, Ghi chú\)",
        ),
        (
            b"phone,mobile\n0912000101,0912000102\n",
            r"columns 'phone' \(1\) and 'mobile' \(2\) both look like",
        ),
        (b"phone,name\r0912000101,An\r", r"ends its lines with CR only"),
    ],
)
def test_a_file_that_is_not_a_recipient_csv_fails_naming_the_file(
    engine: Engine, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "danh-sach-xa.csv"
    path.write_bytes(content)
    with pytest.raises(ImportFileError, match=r"danh-sach-xa\.csv.*" + message):
        import_file(engine, path)
    assert recipients(engine) == {}


def test_a_missing_file_is_an_import_error(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r"cannot open .*khong-co\.csv"):
        import_file(engine, tmp_path / "khong-co.csv")


def test_write_csv_lists_the_rejected_rows(engine: Engine, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "in.csv",
        'phone,name,card_expiry\n0912000101,An,\nabc,"Bình, Thị",\n0912000103,Cường,30/02/2026\n',
    )
    report = import_file(engine, path)
    out = tmp_path / "rejected.csv"
    report.write_csv(out)

    assert out.read_bytes().startswith(b"\xef\xbb\xbf")  # so that Excel shows the accents
    with out.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["line", "column", "value", "reason"],
        ["3", "phone", "abc", "contains characters that are not part of a phone number"],
        ["4", "card_expiry", "30/02/2026", "impossible date (expected dd/mm/yyyy)"],
    ]


def recipient_dates(engine: Engine) -> dict[tuple[str, str], str]:
    with session_scope(engine) as session:
        rows = session.exec(
            select(
                col(Recipient.phone), col(RecipientDate.attribute), col(RecipientDate.value)
            ).join(RecipientDate, col(RecipientDate.recipient_id) == col(Recipient.id))
        )
        return {(phone, attribute): value.isoformat() for phone, attribute, value in rows}


def test_date_attributes_are_indexed_and_follow_re_imports(engine: Engine, tmp_path: Path) -> None:
    load_areas(engine, tmp_path)
    first = write(
        tmp_path,
        "first.csv",
        "phone,card_expiry,ngay_sinh,dia_chi\n"
        "0912000001,15/05/2026,1980-01-02,Thôn 1\n"
        "0912000002,2026-05-16,,Thôn 2\n",
    )
    import_file(engine, first)
    assert recipient_dates(engine) == {
        ("+84912000001", "card_expiry"): "2026-05-15",
        ("+84912000001", "ngay_sinh"): "1980-01-02",
        ("+84912000002", "card_expiry"): "2026-05-16",
    }
    # A renewed card moves; a value that is no longer a date leaves the index; a column the
    # second file does not have (ngay_sinh) keeps its date, as the attributes merge keeps it.
    second = write(
        tmp_path,
        "second.csv",
        "phone,card_expiry\n0912000001,15/05/2027\n0912000002,chưa có\n",
    )
    import_file(engine, second, now=LATER)
    assert recipient_dates(engine) == {
        ("+84912000001", "card_expiry"): "2027-05-15",
        ("+84912000001", "ngay_sinh"): "1980-01-02",
    }
    assert recipients(engine)["+84912000002"].attributes["card_expiry"] == "chưa có"


def test_an_iso_date_that_does_not_exist_is_a_rejected_row(engine: Engine, tmp_path: Path) -> None:
    load_areas(engine, tmp_path)
    report = import_file(
        engine, write(tmp_path, "r.csv", "phone,card_expiry\n0912000001,2026-02-30\n")
    )
    assert report.rejected == [
        RowError(2, "card_expiry", "2026-02-30", "impossible date (expected yyyy-mm-dd)")
    ]
    assert recipient_dates(engine) == {}
