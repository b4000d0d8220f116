"""The write path of the recipient import: chunks, set-based merges, COPY on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select

import audience.importer
from audience.importer import import_recipients
from loa.db import make_engine, session_scope
from loa.models import Area, Recipient, RecipientDate
from loa.settings import Settings

NOW = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)
LATER = datetime(2026, 5, 9, 1, 0, tzinfo=UTC)

FIRST = """\
phone,name,ma_xa,nhom,card_expiry,ngay_sinh,ghi_chu
0912000001,Nguyễn Văn An,18229,nong-dan,01/01/2027,1980-01-02,lần 1
0912000002,Trần Thị Bình,18235,ho-ngheo|nong-dan,02/02/2027,,
0912000003,Lê Văn Cường,,tieu-thuong,03/03/2027,,
01691234567,Phạm Thị Dung,18229,,,,
+84 912 000 001,,,ho-ngheo,,,lần 2
"""
# The same people later: An's card is renewed, Bình's cell is empty (her date stays), Cường's
# card is "not yet" (his date goes), Dung gets a tag; Bình's name is left out (kept).
SECOND = """\
phone,name,ma_xa,nhom,card_expiry
0912000001,Nguyễn Văn An,18235,,04/04/2028
0912000002,,,,
0912000003,Lê Văn Cường,,,chưa có
0391234567,,,dung-dong,
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def state(engine: Engine) -> dict[str, object]:
    """Everything the import writes, by phone, without ids and times."""
    with session_scope(engine) as session:
        people = {r.id: r for r in session.scalars(select(Recipient))}
        tags = {r.phone: set(r.tags) for r in people.values() if r.tags}
        for r in people.values():
            assert r.tags == sorted(set(r.tags))  # distinct and sorted, on both databases
        dates = {
            (people[d.recipient_id].phone, d.attribute): d.value.isoformat()
            for d in session.scalars(select(RecipientDate))
        }
        return {
            "recipients": {
                r.phone: (r.name, r.area_code, r.carrier, r.phone_converted, r.attributes)
                for r in people.values()
            },
            "tags": tags,
            "dates": dates,
            "updated": {r.phone: r.updated_at for r in people.values()},
        }


def load(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(Area(code="42", name="Hà Tĩnh", level="province", path="/42/"))
        session.flush()
        for code in ("18229", "18235"):
            session.add(
                Area(
                    code=code,
                    name=f"Xã {code}",
                    level="commune",
                    parent_code="42",
                    path=f"/42/{code}/",
                )
            )


EXPECTED_AFTER_SECOND = {
    "recipients": {
        "+84912000001": (
            "Nguyễn Văn An",
            "18235",
            "Vinaphone",
            False,
            {"card_expiry": "2028-04-04", "ngay_sinh": "1980-01-02", "ghi_chu": "lần 2"},
        ),
        "+84912000002": (
            "Trần Thị Bình",
            "18235",
            "Vinaphone",
            False,
            {"card_expiry": "2027-02-02"},
        ),
        "+84912000003": ("Lê Văn Cường", None, "Vinaphone", False, {"card_expiry": "chưa có"}),
        "+84391234567": ("Phạm Thị Dung", "18229", "Viettel", False, {}),
    },
    "tags": {
        "+84912000001": {"nong-dan", "ho-ngheo"},
        "+84912000002": {"ho-ngheo", "nong-dan"},
        "+84912000003": {"tieu-thuong"},
        "+84391234567": {"dung-dong"},
    },
    "dates": {
        ("+84912000001", "card_expiry"): "2028-04-04",
        ("+84912000001", "ngay_sinh"): "1980-01-02",
        ("+84912000002", "card_expiry"): "2027-02-02",
    },
}


@pytest.mark.parametrize("chunk", [1, 2, 10_000])
def test_merges_are_the_same_whatever_the_chunk_size(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(audience.importer, "CHUNK_SIZE", chunk)
    load(engine)
    with session_scope(engine) as session:
        first = import_recipients(session, write(tmp_path, "1.csv", FIRST), now=NOW)
    assert (first.rows_read, first.inserted, first.updated, first.converted) == (5, 4, 0, 1)
    after_first = state(engine)
    assert after_first["dates"] == {
        ("+84912000001", "card_expiry"): "2027-01-01",
        ("+84912000001", "ngay_sinh"): "1980-01-02",
        ("+84912000002", "card_expiry"): "2027-02-02",
        ("+84912000003", "card_expiry"): "2027-03-03",
    }
    with session_scope(engine) as session:
        second = import_recipients(session, write(tmp_path, "2.csv", SECOND), now=LATER)
    assert (second.rows_read, second.inserted, second.updated, second.rejected) == (4, 0, 4, [])
    after = state(engine)
    assert {k: after[k] for k in EXPECTED_AFTER_SECOND} == EXPECTED_AFTER_SECOND
    # A row the file leaves as it was is not rewritten: Bình's cells were all empty.
    assert after["updated"] == {
        "+84912000001": LATER,
        "+84912000002": NOW,
        "+84912000003": LATER,
        "+84391234567": LATER,
    }
    # A person who only gains a tag gets it, and the row's updated_at moves (the tags are part
    # of the recipient row, migration 0017).
    with session_scope(engine) as session:
        third = import_recipients(
            session, write(tmp_path, "3.csv", "phone,nhom\n0912000002,can-ngheo\n"), now=LATER
        )
    assert (third.inserted, third.updated) == (0, 1)
    final = state(engine)
    assert final["tags"]["+84912000002"] == {"ho-ngheo", "nong-dan", "can-ngheo"}  # type: ignore[index]
    assert final["updated"]["+84912000002"] == LATER  # type: ignore[index]


def test_two_imports_in_one_transaction(engine: Engine, tmp_path: Path) -> None:
    # On PostgreSQL the second import reuses the first one's temporary table.
    load(engine)
    with session_scope(engine) as session:
        import_recipients(session, write(tmp_path, "1.csv", FIRST), now=NOW)
        again = import_recipients(session, write(tmp_path, "2.csv", SECOND), now=LATER)
    assert (again.inserted, again.updated) == (0, 4)
    after = state(engine)
    assert {k: after[k] for k in EXPECTED_AFTER_SECOND} == EXPECTED_AFTER_SECOND


def test_a_failed_import_leaves_nothing(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk is written before the file is read to its end; an error later in the file (here a
    line that is not UTF-8) rolls the earlier chunks back with the transaction."""
    monkeypatch.setattr(audience.importer, "CHUNK_SIZE", 2)
    load(engine)
    path = tmp_path / "broken.csv"
    path.write_bytes(FIRST.encode("utf-8") + "0912000009,Ng\u00e0\n".encode("cp1258"))
    with pytest.raises(Exception, match="not UTF-8"), session_scope(engine) as session:
        import_recipients(session, path, now=NOW)
    with session_scope(engine) as session:
        assert list(session.scalars(select(col(Recipient.phone)))) == []


def test_values_with_tabs_backslashes_quotes_and_newlines_arrive_intact(
    engine: Engine, tmp_path: Path
) -> None:
    # On PostgreSQL these travel in COPY's text format, where \, tab and newline are special.
    load(engine)
    path = write(
        tmp_path,
        "odd.csv",
        "phone,name,nhom,ghi_chu\n"
        '0912000001,"Lê\tVăn \\N ""An""","a\\b|c""d","dòng 1\ndòng 2\\r"\n',
    )
    with session_scope(engine) as session:
        report = import_recipients(session, path, now=NOW)
    assert report.rejected == []
    after = state(engine)
    assert after["recipients"] == {
        "+84912000001": (
            'Lê\tVăn \\N "An"',
            None,
            "Vinaphone",
            False,
            {"ghi_chu": "dòng 1\ndòng 2\\r"},
        )
    }
    assert after["tags"] == {"+84912000001": {"a\\b", 'c"d'}}


def test_an_error_while_writing_a_chunk_in_the_background_reaches_the_caller(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL chunks are written by a thread while the next is read: a failure there must
    come out of import_recipients, and the transaction must write nothing."""
    engine = make_engine(Settings(database_url=pg_url, data_dir=tmp_path))
    monkeypatch.setattr(audience.importer, "CHUNK_SIZE", 2)
    # The third chunk's tags are written with a statement the server refuses.
    calls = {"n": 0}
    real = audience.importer._write_postgresql

    def failing_third(
        bind: Connection, chunk: audience.importer._PgChunk, now: datetime, *, first: bool
    ) -> set[str]:
        calls["n"] += 1
        if calls["n"] == 3:
            bind.execute(text("SELECT 1 / 0"))
        return real(bind, chunk, now, first=first)

    monkeypatch.setattr(audience.importer, "_write_postgresql", failing_third)
    load(engine)
    with pytest.raises(DBAPIError, match="division by zero"), session_scope(engine) as session:
        import_recipients(
            session, write(tmp_path, "1.csv", FIRST + SECOND.split("\n", 1)[1]), now=NOW
        )
    assert calls["n"] == 3  # nothing more was written after the failure
    assert state(engine)["recipients"] == {}
    engine.dispose()


def test_the_interpreter_settings_change_during_an_import_and_are_restored_after(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The import raises the garbage collector's first threshold (it allocates containers by
    the million, few cycles) and shortens the GIL's switch interval (the writer thread waits on
    the server while the reading thread parses), and gives the process its own back, also when
    the import fails."""
    import gc
    import sys

    def settings() -> tuple[tuple[int, int, int], float]:
        return gc.get_threshold(), sys.getswitchinterval()

    monkeypatch.setattr(audience.importer, "CHUNK_SIZE", 2)
    load(engine)
    before = settings()
    seen: list[tuple[tuple[int, int, int], float]] = []
    with session_scope(engine) as session:
        import_recipients(
            session,
            write(tmp_path, "1.csv", FIRST),
            now=NOW,
            progress=lambda _rows, _done: seen.append(settings()),
        )
    # Told after each chunk (changed), and once more when the import is over (restored).
    raised = (70_000, *before[0][1:])
    assert len(seen) > 2, seen
    assert all(t == raised and i == pytest.approx(0.0002) for t, i in seen[:-1]), seen
    assert seen[-1] == before
    assert settings() == before
    bad = tmp_path / "bad.csv"
    bad.write_bytes(FIRST.encode() + b"0912000009,\xff\xfe\n")
    with pytest.raises(Exception, match="not UTF-8"), session_scope(engine) as session:
        import_recipients(session, bad, now=NOW)
    assert settings() == before


def test_merged_tags_are_distinct_and_in_code_point_order_on_both_databases(
    engine: Engine, tmp_path: Path
) -> None:
    """recipient.tags is kept sorted as Python sorts (code points), whatever the database's
    collation: a new recipient's tags are sorted in Python, merged ones in SQL."""
    load(engine)
    with session_scope(engine) as session:
        import_recipients(
            session, write(tmp_path, "1.csv", "phone,nhom\n0912000001,nông-dân|Zeta|b\n"), now=NOW
        )
    with session_scope(engine) as session:
        import_recipients(
            session,
            write(tmp_path, "2.csv", "phone,nhom\n0912000001,ánh|a-b|Zeta|ab\n"),
            now=LATER,
        )
    with session_scope(engine) as session:
        stored = session.scalars(select(col(Recipient.tags))).one()
    assert stored == sorted({"nông-dân", "Zeta", "b", "ánh", "a-b", "ab"})
    assert stored == ["Zeta", "a-b", "ab", "b", "nông-dân", "ánh"]
