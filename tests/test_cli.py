"""The CLI as a user meets it: help everywhere, one-line errors, non-zero exits, no half-writes."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from sqlalchemy import func, select

from cli import main
from loa.db import make_engine
from loa.models import AuditEntry, Campaign, Wave
from loa.settings import Settings
from tests.clirun import loa_env, run_loa


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found.extend(_all_commands(command, (*prefix, name)))
    return found


def test_every_command_has_help() -> None:
    from click.testing import CliRunner

    commands = _all_commands(main)
    assert {
        ("db", "upgrade"),
        ("serve",),
        ("worker",),
        ("scheduler",),
        ("recipients", "import"),
        ("campaign", "create"),
        ("campaign", "launch"),
        ("stats",),
        ("sms", "count"),
        ("campaign", "plan"),
    } <= set(commands)
    for path in commands:
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Usage: main " + " ".join(path) in result.output


def test_malformed_spec_names_file_and_field_and_writes_nothing(
    db_url: str, tmp_path: Path
) -> None:
    env = loa_env(db_url, tmp_path)
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: C\nwaves:\n  - name: Nhắc\n    channel: sms\n    at: '2026-05-08 07:30'\n"
        "    audience: {areas: ['42']}\n    template: 'x'\n    klass: qc\n",
        encoding="utf-8",
    )
    result = run_loa("campaign", "create", str(spec), env=env, check=False)
    assert result.returncode == 1
    assert (
        f"Error: {spec}: wave 1 ('Nhắc'), field klass: Extra inputs are not permitted"
        in result.stderr
    )
    assert "Traceback" not in result.stderr

    unknown_area = tmp_path / "area.yaml"
    unknown_area.write_text(
        spec.read_text("utf-8").replace("    klass: qc\n", ""), encoding="utf-8"
    )
    result = run_loa("campaign", "create", str(unknown_area), env=env, check=False)
    assert result.returncode == 1
    assert "field audience.areas: unknown area code(s) 42" in result.stderr

    engine = make_engine(Settings(database_url=db_url, data_dir=tmp_path))
    with engine.connect() as conn:
        for table in (Campaign, Wave, AuditEntry):
            assert conn.scalar(select(func.count()).select_from(table)) == 0
    engine.dispose()


def test_sms_count_prints_one_line_of_json(tmp_path: Path) -> None:
    # No database is opened: the URL points at a file that is never created.
    env = loa_env(f"sqlite:///{tmp_path / 'unused.db'}", tmp_path)
    text = "BHXH tỉnh Hà Tĩnh: Tham gia BHXH tự nguyện - điểm tựa của bạn và gia đình."
    assert run_loa("sms", "count", "Hello", env=env).stdout == (
        '{"encoding": "GSM-7", "segments": 1, "characters": 5}\n'
    )
    assert run_loa("sms", "count", text, env=env).stdout == (
        '{"encoding": "UCS-2", "segments": 2, "characters": 74}\n'
    )
    assert run_loa("sms", "count", "--unaccent", text, env=env).stdout == (
        '{"encoding": "GSM-7", "segments": 1, "characters": 74}\n'
    )
    assert not (tmp_path / "unused.db").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql+psycopg://loa@127.0.0.1:1/loa",
            "Error: cannot reach the database postgresql+psycopg://loa@127.0.0.1:1/loa: ",
        ),
        ("mysql://x@localhost/loa", "Loa supports sqlite and postgresql"),
        ("not a url", "is not a database URL"),
    ],
)
def test_an_unusable_database_fails_in_one_line(url: str, message: str, tmp_path: Path) -> None:
    result = run_loa("serve", env=loa_env(url, tmp_path), check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unmigrated_database_asks_for_the_upgrade(tmp_path: Path) -> None:
    env = loa_env(f"sqlite:///{tmp_path / 'new.db'}", tmp_path)
    result = run_loa("stats", "1", env=env, check=False)
    assert result.returncode == 1
    assert "run `loa db upgrade` first" in result.stderr
    assert "upgraded from empty to" in run_loa("db", "upgrade", env=env).stdout
    missing = run_loa("stats", "1", env=env, check=False)
    assert (missing.returncode, missing.stderr.strip()) == (1, "Error: no campaign with id 1")


def test_a_bad_setting_is_named(tmp_path: Path) -> None:
    env = loa_env(f"sqlite:///{tmp_path / 'x.db'}", tmp_path, LOA_PORT="eighty")
    result = run_loa("serve", env=env, check=False)
    assert result.returncode == 1
    assert "LOA_PORT" in result.stderr


def test_a_file_that_is_not_csv_fails_cleanly_and_imports_nothing(
    db_url: str, tmp_path: Path
) -> None:
    from loa.models import Recipient

    workbook = tmp_path / "danh_sach.xlsx"
    workbook.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    result = run_loa(
        "recipients", "import", str(workbook), env=loa_env(db_url, tmp_path), check=False
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: {workbook} starts like a zip file (.xlsx) but is damaged"
    )
    engine = make_engine(Settings(database_url=db_url, data_dir=tmp_path))
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Recipient)) == 0
    engine.dispose()


def test_campaign_plan_prints_each_wave_and_json(db_url: str, tmp_path: Path) -> None:
    env = loa_env(db_url, tmp_path, LOA_SMS_PRICE_PER_SEGMENT="650", LOA_SMS_RATE_PER_SECOND="10")
    (tmp_path / "areas.csv").write_text(
        "code,name,level,parent_code\n42,Tỉnh Hà Tĩnh,province,\n", encoding="utf-8"
    )
    (tmp_path / "people.csv").write_text(
        "phone,ma_xa,card_expiry\n0912000001,42,01/06/2030\n0912000002,42,\n", encoding="utf-8"
    )
    run_loa("areas", "import", str(tmp_path / "areas.csv"), env=env)
    run_loa("recipients", "import", str(tmp_path / "people.csv"), env=env)
    spec = tmp_path / "c.yaml"
    spec.write_text(
        "name: C\nwaves:\n  - name: Nhắc\n    channel: sms\n    at: '2030-05-08 07:30'\n"
        "    audience: {areas: ['42']}\n    template: 'Het han {{ card_expiry }}'\n",
        encoding="utf-8",
    )
    run_loa("campaign", "create", str(spec), env=env)
    before = _counts(db_url, tmp_path)
    table = run_loa("campaign", "plan", "1", env=env)
    assert _counts(db_url, tmp_path) == before  # a plan writes nothing
    lines = table.stdout.splitlines()
    assert lines[1].split()[:3] == ["wave", "trigger", "times"]
    assert lines[2].split()[:8] == ["1", "Nhắc", "once", "1", "2", "0", "0", "2"]
    assert "2030-05-08 07:30:00  2030-05-08 07:30:00" in lines[2]
    assert lines[-2] == "wave 1 by carrier: Vinaphone 2 msg, 2 seg x 650 = 1,300"
    assert lines[-1] == "in all: 2 messages, 2 segments, cost 1,300 VND"
    assert (
        "wave 1 REFUSED: template variable 'card_expiry' is missing for 1 recipient(s) to send "
        "to: +84912***002 (id 2)"
    ) in table.stderr
    assert "cannot be approved or launched until every refusal above is fixed" in table.stderr
    as_json = json.loads(run_loa("campaign", "plan", "1", "--json", env=env).stdout)
    assert as_json["waves"][0]["missing_variables"] == {"card_expiry": 1}
    missing = run_loa("campaign", "plan", "7", env=env, check=False)
    assert (missing.returncode, missing.stderr.strip()) == (1, "Error: no campaign with id 7")


def _counts(db_url: str, tmp_path: Path) -> tuple[int, int, int]:
    engine = make_engine(Settings(database_url=db_url, data_dir=tmp_path))
    with engine.connect() as conn:
        counts = tuple(
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (Campaign, Wave, AuditEntry)
        )
    engine.dispose()
    return counts  # type: ignore[return-value]
