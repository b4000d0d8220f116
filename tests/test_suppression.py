"""The suppression list: add and remove with the audit log and the opt-out guard, CSV imports with
a report of bad rows, opt-outs received by SMS, and that no import ever loses a suppression.
On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import col

from audience.importer import import_recipients
from audience.keywords import InboundKind
from audience.suppression import (
    InboundResult,
    add_suppression,
    apply_inbound,
    import_suppressions,
    list_suppressions,
    remove_suppression,
)
from channels.registry import channel_lookup
from loa.db import session_scope
from loa.errors import Conflict, ImportFileError, InvalidInput, NotFound
from loa.models import AuditEntry, Consent, DeliveryEvent, OutboxMessage, Recipient, Suppression
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from tests.builders import add_areas, add_consent, add_recipient, launch_and_fire, outbox_counts
from tests.conftest import FakeClock

KEYWORDS = Settings().opt_out_keywords
OPT_IN = Settings().opt_in_keywords


def _suppressions(engine: Engine) -> dict[str, tuple[str, str | None]]:
    with session_scope(engine) as session:
        return {s.phone: (s.reason, s.note) for s in session.scalars(select(Suppression))}


def _audit(engine: Engine) -> list[tuple[str, str]]:
    with session_scope(engine) as session:
        return [
            (a, e)
            for a, e in session.execute(
                select(col(AuditEntry.action), col(AuditEntry.entity_id)).order_by(
                    col(AuditEntry.id)
                )
            )
        ]


def test_add_and_remove_by_hand_with_audit_and_the_opt_out_guard(
    engine: Engine, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_suppression(
            session, "0912 000 001", reason="manual", note="asked", actor="a", now=clock()
        )
        add_suppression(
            session, "+84912000002", reason="Opt-out", note=None, actor="a", now=clock()
        )
        # An opt-out is not turned into something weaker by a later add.
        add_suppression(session, "84912000002", reason="manual", note="x", actor="a", now=clock())
        with pytest.raises(InvalidInput, match="unknown suppression reason 'spam'"):
            add_suppression(session, "0912000003", reason="spam", note=None, actor="a", now=clock())
        with pytest.raises(InvalidInput, match="not a mobile number"):
            add_suppression(
                session, "024 3825 1234", reason="manual", note=None, actor="a", now=clock()
            )
    assert _suppressions(engine) == {
        "+84912000001": ("manual", "asked"),
        "+84912000002": ("opt_out", None),
    }

    with session_scope(engine) as session:
        with pytest.raises(Conflict, match="opted out on 2026-05-08 00:00 UTC"):
            remove_suppression(session, "0912000002", actor="a", now=clock())
        with pytest.raises(NotFound):
            remove_suppression(session, "0912000009", actor="a", now=clock())
        remove_suppression(session, "0912000001", actor="a", now=clock())
    assert set(_suppressions(engine)) == {"+84912000002"}
    with session_scope(engine) as session:
        remove_suppression(
            session, "0912000002", actor="a", now=clock(), opt_out_withdrawn=True, note="DKQC"
        )
        rows, next_after = list_suppressions(session)
    assert (rows, next_after) == ([], None)
    assert _audit(engine) == [
        ("suppression.add", "+84912000001"),
        ("suppression.add", "+84912000002"),
        ("suppression.add", "+84912000002"),
        ("suppression.remove", "+84912000001"),
        ("suppression.remove", "+84912000002"),
    ]
    with session_scope(engine) as session:
        last = session.scalars(select(AuditEntry).order_by(col(AuditEntry.id).desc())).first()
        assert last is not None
        assert last.before is not None and last.before["reason"] == "opt_out"
        assert last.after == {"note": "DKQC"}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8-sig")
    return path


def test_a_workbook_list_imports_and_a_formula_row_is_rejected(
    engine: Engine, clock: FakeClock, tmp_path: Path
) -> None:
    """Lists come from Excel as often as from CSV: the same reader as the recipient import."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["SĐT", "Lý do"])
    sheet.append([912000001, "do_not_contact"])  # typed as a number: the leading 0 is lost
    sheet.append(["=A2", "manual"])
    book.save(tmp_path / "dnc.xlsx")
    with session_scope(engine) as session:
        report = import_suppressions(session, tmp_path / "dnc.xlsx", now=clock(), actor="a")
    assert (report.rows_read, report.added) == (2, 1)
    assert [(e.line, e.column, e.reason[:20]) for e in report.rejected] == [
        (3, "SĐT", "formula cell (=A2); ")
    ]
    assert _suppressions(engine) == {"+84912000001": ("do_not_contact", None)}


def test_import_reports_bad_rows_and_keeps_every_opt_out(
    engine: Engine, clock: FakeClock, tmp_path: Path
) -> None:
    with session_scope(engine) as session:
        add_suppression(session, "0912000001", reason="opt_out", note="SMS", actor="a", now=clock())
    long_note = "x" * 501
    source = _write(
        tmp_path / "dnc.csv",
        "STT;Số điện thoại;Lý do;Ghi chú\n"
        "1;0912 000 001;manual;from the commune\n"  # opted out earlier: stays opt_out
        "2;+84 912 000 002;;\n"  # no reason: the default
        "3;024 3825 1234;manual;\n"  # a landline
        "4;0912000004;spam;\n"  # unknown reason
        f"5;0912000005;invalid;{long_note}\n"
        "6;01691234567;Do not contact;old number\n"  # converted to 0391234567
        "7;abc;manual;\n"
        "8;0912000002;invalid;second row of the same number wins\n",
    )
    with session_scope(engine) as session:
        dry = import_suppressions(session, source, now=clock(), actor="a", dry_run=True)
    assert (dry.added, dry.updated, len(dry.rejected)) == (2, 1, 4)
    assert set(_suppressions(engine)) == {"+84912000001"}  # a dry run writes nothing

    with session_scope(engine) as session:
        report = import_suppressions(session, source, now=clock(), actor="a")
    assert (report.rows_read, report.added, report.updated, report.kept_opt_out) == (8, 2, 1, 1)
    assert report.ignored_columns == ["STT"]
    assert [(e.line, e.column, e.value, e.reason) for e in report.rejected] == [
        (4, "Số điện thoại", "024 3825 1234", "not a mobile number (landline)"),
        (
            5,
            "Lý do",
            "spam",
            "unknown suppression reason 'spam'; use one of opt_out, do_not_contact, invalid, "
            "manual",
        ),
        (6, "Ghi chú", long_note, "longer than 500 characters"),
        (8, "Số điện thoại", "abc", "contains characters that are not part of a phone number"),
    ]
    assert _suppressions(engine) == {
        "+84912000001": ("opt_out", "SMS"),
        "+84912000002": ("invalid", "second row of the same number wins"),
        "+84391234567": ("do_not_contact", "old number"),
    }
    report_file = tmp_path / "rejected.csv"
    report.write_csv(report_file)
    assert report_file.read_text("utf-8-sig").splitlines()[:2] == [
        "line,column,value,reason",
        "4,Số điện thoại,024 3825 1234,not a mobile number (landline)",
    ]
    # Re-importing the file changes nothing; importing a file without those numbers removes none.
    with session_scope(engine) as session:
        again = import_suppressions(session, source, now=clock(), actor="a")
        import_suppressions(
            session, _write(tmp_path / "other.csv", "phone\n0912000009\n"), now=clock(), actor="a"
        )
    assert (again.added, again.updated) == (0, 3)
    assert len(_suppressions(engine)) == 4
    assert [a for a in _audit(engine) if a[0] == "suppression.import"] == [
        ("suppression.import", "dnc.csv"),
        ("suppression.import", "dnc.csv"),
        ("suppression.import", "other.csv"),
    ]


def test_a_file_that_cannot_be_read_writes_nothing(
    engine: Engine, clock: FakeClock, tmp_path: Path
) -> None:
    no_phone = _write(tmp_path / "names.csv", "ho_ten,ly_do\nAn,manual\n")
    twice = _write(tmp_path / "twice.csv", "phone,sdt\n0912000001,0912000002\n")
    # Several chunks of good rows are written before the bad line: all of it is rolled back.
    binary = tmp_path / "x.csv"
    good = "".join(f"09{12000000 + i}\n" for i in range(7000)).encode()
    binary.write_bytes(b"phone\n" + good + b"\x00\x01\n")
    with session_scope(engine) as session:
        with pytest.raises(ImportFileError, match=r"names.csv: no phone column \(found: ho_ten"):
            import_suppressions(session, no_phone, now=clock(), actor="a")
        with pytest.raises(ImportFileError, match="both look like the phone column"):
            import_suppressions(session, twice, now=clock(), actor="a")
    with (
        pytest.raises(ImportFileError, match=r"x\.csv, line 7002: binary data"),
        session_scope(engine) as session,
    ):
        import_suppressions(session, binary, now=clock(), actor="a")
    assert _suppressions(engine) == {}
    assert _audit(engine) == []


def test_a_re_import_of_recipients_never_removes_a_suppression(
    engine: Engine, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    people = _write(
        tmp_path / "people.csv",
        "so_dien_thoai,ho_ten,ma_xa\n0912000001,An,18301\n0912000002,Bình,18301\n",
    )
    with session_scope(engine) as session:
        add_areas(session)
        import_recipients(session, people, now=clock())
        apply_inbound(
            session,
            "0912000001",
            "Từ chối",
            now=clock(),
            keywords=KEYWORDS,
            opt_in_keywords=OPT_IN,
            actor="a",
        )
    for _ in range(2):
        clock.advance(hours=1)
        with session_scope(engine) as session:
            import_recipients(session, people, now=clock())
    assert _suppressions(engine) == {"+84912000001": ("opt_out", "SMS 'Từ chối'")}
    launch_and_fire(
        engine,
        settings,
        at="2026-05-08 09:00",
        fire_at=datetime(2026, 5, 8, 2, 0, tzinfo=UTC),
        launched_at=clock(),
    )
    assert outbox_counts(engine) == {"suppressed": 1, "planned": 1}


def test_an_opt_out_by_sms_suppresses_the_sender_and_withdraws_consent(
    engine: Engine, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_consent(session, "+84912000001", now=clock())
        add_suppression(session, "0912000001", reason="manual", note=None, actor="a", now=clock())
    clock.advance(minutes=5)
    with session_scope(engine) as session:
        mention = apply_inbound(
            session,
            "+84912000001",
            "Anh Huy đây",
            now=clock(),
            keywords=KEYWORDS,
            opt_in_keywords=OPT_IN,
            actor="sms",
        )
        assert (mention.kind, mention.suppressed) == (InboundKind.MENTIONS_KEYWORD, False)
        done = apply_inbound(
            session,
            "84 912 000 001",
            " HỦY. ",
            now=clock(),
            keywords=KEYWORDS,
            opt_in_keywords=OPT_IN,
            actor="sms",
        )
        with pytest.raises(InvalidInput, match="not a Vietnamese number"):
            apply_inbound(
                session,
                "+14155550100",
                "STOP",
                now=clock(),
                keywords=KEYWORDS,
                opt_in_keywords=OPT_IN,
                actor="s",
            )
    assert (done.phone, done.kind, done.keyword, done.suppressed, done.consent_withdrawn) == (
        "+84912000001",
        InboundKind.OPT_OUT,
        "HUY",
        True,
        True,
    )
    with session_scope(engine) as session:
        row = session.get(Suppression, "+84912000001")
        assert row is not None
        assert (row.reason, row.note, row.created_at) == ("opt_out", "SMS 'HỦY.'", clock())
        assert session.get(Consent, "+84912000001") is None
        entry = session.scalars(
            select(AuditEntry).where(col(AuditEntry.action) == "suppression.opt_out")
        ).one()
    assert (entry.actor, entry.entity_id) == ("sms", "+84912000001")
    assert entry.before is not None and entry.before["reason"] == "manual"
    assert entry.after is not None
    assert (entry.after["keyword"], entry.after["body"]) == ("HUY", " HỦY. ")
    assert entry.after["consent_withdrawn"]["source"] == "manual"


def test_an_opt_in_by_sms_records_consent_and_lifts_only_the_senders_own_opt_out(
    engine: Engine, clock: FakeClock
) -> None:
    def inbound(phone: str, body: str) -> InboundResult:
        with session_scope(engine) as session:
            return apply_inbound(
                session,
                phone,
                body,
                now=clock(),
                keywords=KEYWORDS,
                opt_in_keywords=OPT_IN,
                actor="sms",
            )

    with session_scope(engine) as session:
        add_suppression(
            session, "0912000002", reason="do_not_contact", note=None, actor="a", now=clock()
        )
    assert inbound("0912000001", "Từ chối").suppressed
    clock.advance(days=3)
    sentence = inbound("0912000001", "không DKQC")
    assert (sentence.kind, sentence.consented) == (InboundKind.OTHER, False)
    back = inbound("84912000001", " dkqc ")
    assert (back.kind, back.keyword, back.consented, back.opt_out_lifted, back.suppressed) == (
        InboundKind.OPT_IN,
        "DKQC",
        True,
        True,
        False,
    )
    listed = inbound("0912000002", "DK QC")
    assert (listed.consented, listed.opt_out_lifted, listed.suppressed) == (True, False, True)
    assert _suppressions(engine) == {"+84912000002": ("do_not_contact", None)}
    with session_scope(engine) as session:
        consents = {c.phone: (c.source, c.given_at) for c in session.scalars(select(Consent))}
        actions = session.execute(
            select(col(AuditEntry.action), col(AuditEntry.entity_id))
            .where(col(AuditEntry.actor) == "sms")
            .order_by(col(AuditEntry.id))
        ).all()
    assert consents == {
        "+84912000001": ("keyword", clock()),
        "+84912000002": ("keyword", clock()),
    }
    assert [tuple(a) for a in actions] == [
        ("suppression.opt_out", "+84912000001"),
        ("consent.add", "+84912000001"),
        ("suppression.remove", "+84912000001"),
        ("consent.add", "+84912000002"),
    ]
    # Refusing again withdraws the consent the keyword gave.
    again = inbound("0912000001", "STOP")
    assert (again.suppressed, again.consent_withdrawn) == (True, True)


def test_an_opt_out_mid_wave_stops_the_rest(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(update={"worker_batch_size": 1})
    with session_scope(engine) as session:
        add_areas(session)
        for i in range(1, 4):
            add_recipient(session, f"+8491200000{i}", now=clock())
    fire = datetime(2026, 5, 8, 2, 0, tzinfo=UTC)
    launch_and_fire(engine, settings, at="2026-05-08 09:00", fire_at=fire, launched_at=clock())
    clock.now = fire
    lookup = channel_lookup(settings)
    assert dispatch_once(engine, worker_id="w", clock=clock, settings=settings, channel_for=lookup)
    with session_scope(engine) as session:
        apply_inbound(
            session,
            "0912000002",
            "STOP",
            now=clock(),
            keywords=KEYWORDS,
            opt_in_keywords=OPT_IN,
            actor="sms",
        )
    # One at a time: the opted-out person's claim is set aside (a batch of none), the next sent.
    for _ in range(3):
        dispatch_once(engine, worker_id="w", clock=clock, settings=settings, channel_for=lookup)
    with session_scope(engine) as session:
        by_phone = dict(
            session.execute(
                select(col(Recipient.phone), col(OutboxMessage.status)).join(
                    Recipient, col(Recipient.id) == col(OutboxMessage.recipient_id)
                )
            ).all()
        )
        events = session.scalar(
            select(func.count())
            .select_from(DeliveryEvent)
            .where(col(DeliveryEvent.status) == "suppressed")
        )
    assert by_phone == {
        "+84912000001": "sent",
        "+84912000002": "suppressed",
        "+84912000003": "sent",
    }
    assert events == 1
