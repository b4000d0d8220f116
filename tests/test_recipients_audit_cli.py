"""`loa recipients search` / `show` and `loa audit` as a user runs them, on SQLite and
PostgreSQL: the same filters and keyset pages as the API, clear errors for bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from loa.db import session_scope
from tests.builders import add_areas, add_recipient
from tests.clirun import loa_env, run_loa

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


def _seed(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as session:
        add_areas(session)
        ids = {}
        for phone, area, name, tags in (
            ("+84912000001", "18301", "Nguyễn Văn An", ("nong-dan",)),
            ("+84912000002", "18302", "Nguyễn Thị Bình", ("nong-dan", "ho-ngheo")),
            ("+84912000003", "18302", "Trần Văn Cường", ("ho-ngheo",)),
            ("+84912000004", "16801", "Nguyễn Văn Dũng", ("nong-dan",)),
        ):
            recipient = add_recipient(
                session,
                phone,
                now=NOW,
                area=area,
                name=name,
                tags=tags,
                attributes={"card_expiry": "2026-06-30"},
            )
            assert recipient.id is not None
            ids[phone] = recipient.id
        return ids


def test_recipient_search_and_show(engine: Engine, db_url: str, tmp_path: Path) -> None:
    ids = _seed(engine)
    env = loa_env(db_url, tmp_path)

    # Every filter at once: district 440 (both its communes), the tag, the name's start.
    found = run_loa(
        "recipients", "search", "--area", "440", "--tag", "nong-dan", "--name", "Nguyễn", env=env
    ).stdout
    assert "+84912000001" in found and "+84912000002" in found
    assert "+84912000003" not in found and "+84912000004" not in found
    assert "ho-ngheo,nong-dan" in found  # a recipient's tags, sorted
    assert "2 shown; that is the end of the list" in found

    # Keyset pages: one row, then the rest from the cursor printed.
    first = run_loa("recipients", "search", "--tag", "nong-dan", "--limit", "1", env=env).stdout
    assert "+84912000001" in first and "1 shown; more with: --after " in first
    cursor = first.rsplit("--after ", 1)[1].strip()
    rest = run_loa("recipients", "search", "--tag", "nong-dan", "--after", cursor, env=env).stdout
    assert "+84912000002" in rest and "+84912000004" in rest and "+84912000001" not in rest

    # A number written as people write it finds its stored form.
    by_phone = run_loa("recipients", "search", "--phone", "0912.000.003", env=env).stdout
    assert "Trần Văn Cường" in by_phone and "1 shown" in by_phone
    none = run_loa("recipients", "search", "--phone", "0912000009", env=env).stdout
    assert "no recipient matches" in none

    shown = run_loa("recipients", "show", str(ids["+84912000002"]), env=env).stdout
    assert f"recipient {ids['+84912000002']}: +84912000002" in shown
    assert "tags: ho-ngheo, nong-dan" in shown and "card_expiry: 2026-06-30" in shown

    for args, reason in (
        (("search", "--area", "99999"), "unknown area code 99999"),
        (("search", "--phone", "024 3825 1234"), "Error: "),
        (("show", "999999"), "no recipient with id 999999"),
    ):
        bad = run_loa("recipients", *args, env=env, check=False)
        assert bad.returncode != 0, args
        assert reason in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_audit_log_on_the_command_line(db_url: str, tmp_path: Path) -> None:
    env = loa_env(db_url, tmp_path)
    assert "no audit entries match" in run_loa("audit", env=env).stdout
    run_loa("suppression", "add", "0912000001", "--reason", "do_not_contact", env=env)
    run_loa("suppression", "add", "0912000002", "--reason", "manual", env=env)
    run_loa("suppression", "remove", "0912000002", env=env)

    log = run_loa("audit", "--entity", "suppression", env=env).stdout.splitlines()
    actions = [line.split()[3] for line in log if not line.startswith((" ", "3 shown"))]
    # Newest first.
    assert actions == ["suppression.remove", "suppression.add", "suppression.add"], log
    assert any("before:" in line and "manual" in line for line in log)
    assert log[-1] == "3 shown; that is the end of the list"

    first = run_loa("audit", "--limit", "1", env=env).stdout
    cursor = first.rsplit("--after ", 1)[1].strip()
    rest = run_loa("audit", "--after", cursor, env=env).stdout
    assert "2 shown; that is the end of the list" in rest
    assert "no audit entries match" in run_loa("audit", "--actor", "key:nobody", env=env).stdout
