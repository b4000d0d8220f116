"""API keys: only a hash is stored, a presented key is refused as unknown, revoked or expired and
nothing more, last use is stamped at most once a minute, creation and revocation are audited;
and the `loa apikey` commands. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import col

from loa.apikeys import Role, create_key, list_keys, revoke_key, verify_key
from loa.clock import system_clock
from loa.db import make_engine, session_scope
from loa.errors import Conflict, InvalidInput, NotAuthenticated, NotFound
from loa.models import ApiKey, AuditEntry
from loa.settings import Settings
from tests.builders import add_areas
from tests.clirun import loa_env, run_loa
from tests.conftest import FakeClock

KEY_FORMAT = re.compile(r"^loa_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")


def _verify(engine: Engine, key: str, clock: FakeClock) -> str:
    """The actor of a presented key, or the refusal's message."""
    try:
        with session_scope(engine) as session:
            return verify_key(session, key, now=clock()).actor
    except NotAuthenticated as exc:
        return exc.message


def test_create_stores_only_a_hash_and_audits(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        created = create_key(
            session, role="approver", actor="cli:admin", now=clock(), name="Phòng truyền thông"
        )
    match = KEY_FORMAT.match(created.key)
    assert match is not None, created.key
    prefix, secret = match.groups()
    with session_scope(engine) as session:
        row = session.scalars(select(ApiKey)).one()
        audit = session.scalars(select(AuditEntry)).one()
    assert (row.prefix, row.role, row.name, row.area_code) == (
        prefix,
        "approver",
        "Phòng truyền thông",
        None,
    )
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert (audit.action, audit.actor, audit.entity, audit.entity_id) == (
        "apikey.create",
        "cli:admin",
        "api_key",
        prefix,
    )
    assert audit.after == {
        "name": "Phòng truyền thông",
        "role": "approver",
        "area": None,
        "expires_at": None,
    }
    # The secret is nowhere in the database, in any form but its hash.
    stored = repr(row.model_dump()) + repr(audit.model_dump())
    assert secret not in stored


def test_verify_names_the_caller(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        created = create_key(session, role="district", area_code="440", actor="t", now=clock())
    with session_scope(engine) as session:
        caller = verify_key(session, created.key, now=clock())
    prefix = created.api_key.prefix
    assert caller == type(caller)(
        key_id=created.api_key.id or 0,
        prefix=prefix,
        name="district 440",
        role=Role.DISTRICT,
        area_code="440",
    )
    assert caller.actor == f"key:{prefix}"


def test_refusals_are_unknown_revoked_or_expired(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        good = create_key(session, role="operator", actor="t", now=clock()).key
        revoked = create_key(session, role="operator", actor="t", now=clock()).key
        expiring = create_key(
            session, role="operator", actor="t", now=clock(), expires_in=timedelta(days=1)
        ).key
        revoke_key(session, revoked.split("_")[1], actor="t", now=clock())
    prefix = good.split("_")[1]
    for presented in (
        f"loa_{prefix}_{'x' * 43}",  # a real prefix, another secret
        f"loa_{prefix}_",
        f"loa_0badc0de_{good.split('_', 2)[2]}",  # a real secret under another prefix
        good.removeprefix("loa_"),
        "",
    ):
        assert _verify(engine, presented, clock) == "unknown API key", presented
    assert _verify(engine, f"  {good} ", clock) == f"key:{prefix}"
    assert "was revoked" in _verify(engine, revoked, clock)

    clock.advance(days=1, seconds=-1)
    assert _verify(engine, expiring, clock).startswith("key:")
    clock.advance(seconds=1)
    assert _verify(engine, expiring, clock) == (
        f"API key {expiring.split('_')[1]} expired at 2026-05-09 00:00 UTC; "
        "ask an administrator for a new one"
    )


def test_last_use_is_stamped_at_most_once_a_minute(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        key = create_key(session, role="operator", actor="t", now=clock()).key

    def last_used() -> object:
        with session_scope(engine) as session:
            return session.scalars(select(col(ApiKey.last_used_at))).one()

    assert last_used() is None
    first = clock.advance(seconds=5)
    _verify(engine, key, clock)
    assert last_used() == first
    clock.advance(seconds=59)
    _verify(engine, key, clock)
    assert last_used() == first
    second = clock.advance(seconds=1)
    _verify(engine, key, clock)
    assert last_used() == second


@pytest.mark.parametrize(
    ("role", "area", "expires_in", "says"),
    [
        ("boss", None, None, "unknown role 'boss'; use one of admin, planner, approver"),
        ("district", None, None, "a district key needs the area it serves"),
        ("planner", "440", None, "only district keys have an area"),
        ("district", "99", None, "unknown area code 99"),
        ("operator", None, timedelta(0), "lifetime must be positive"),
    ],
)
def test_create_refuses_what_makes_no_sense_and_writes_nothing(
    role: str,
    area: str | None,
    expires_in: timedelta | None,
    says: str,
    engine: Engine,
    clock: FakeClock,
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
    with pytest.raises(InvalidInput) as refused, session_scope(engine) as session:
        create_key(
            session, role=role, area_code=area, expires_in=expires_in, actor="t", now=clock()
        )
    assert says in refused.value.message
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(ApiKey)) == 0
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0


def test_revoke_is_audited_once(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        prefix = create_key(session, role="admin", actor="t", now=clock()).api_key.prefix
    when = clock.advance(hours=1)
    with session_scope(engine) as session:
        revoke_key(session, prefix, actor="cli:admin", now=when)
    later = clock.advance(hours=1)
    with (
        pytest.raises(Conflict, match="already revoked at 2026-05-08 01:00 UTC"),
        session_scope(engine) as session,
    ):
        revoke_key(session, prefix, actor="cli:admin", now=later)
    with (
        pytest.raises(NotFound, match="no API key with prefix 0badc0de"),
        session_scope(engine) as session,
    ):
        revoke_key(session, "0badc0de", actor="cli:admin", now=later)
    with session_scope(engine) as session:
        assert [k.revoked_at for k in list_keys(session)[0]] == [when]
        revocations = session.scalars(
            select(AuditEntry).where(col(AuditEntry.action) == "apikey.revoke")
        ).all()
    assert [(a.actor, a.entity_id, a.at) for a in revocations] == [("cli:admin", prefix, when)]


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_create_list_revoke(db_url: str, tmp_path: Path) -> None:
    env = loa_env(db_url, tmp_path)
    engine = make_engine(Settings(database_url=db_url, data_dir=tmp_path))
    with session_scope(engine) as session:
        add_areas(session)

    created = run_loa(
        "apikey", "create", "--role", "approver", "--name", "Phòng truyền thông", env=env
    )
    key = created.stdout.strip()
    match = KEY_FORMAT.match(key)
    assert match is not None, created.stdout  # the key alone on stdout, for KEY=$(...)
    prefix, secret = match.groups()
    assert f"created approver key {prefix} ('Phòng truyền thông')" in created.stderr
    assert "it is not shown again" in created.stderr
    district = run_loa(
        "apikey", "create", "--role", "district", "--area", "440", "--expires-days", "30", env=env
    )
    district_prefix = district.stdout.split("_")[1]
    assert "area 440, expires " in district.stderr

    with session_scope(engine) as session:
        assert verify_key(session, key, now=system_clock()).actor == f"key:{prefix}"

    listed = run_loa("apikey", "list", env=env).stdout
    # Columns are at least two spaces apart; names and times have single spaces.
    rows = {row[0]: row for row in (re.split(r"\s{2,}", line) for line in listed.splitlines())}
    assert rows["prefix"] == [
        "prefix",
        "name",
        "role",
        "area",
        "created",
        "expires",
        "revoked",
        "last used",
    ]
    name, role, area, _, expires, revoked_at, last_used = rows[prefix][1:]
    assert (name, role, area, expires, revoked_at) == (
        "Phòng truyền thông",
        "approver",
        "-",
        "-",
        "-",
    )
    assert last_used != "-"  # the verify above
    assert rows[district_prefix][2:4] == ["district", "440"]
    assert rows[district_prefix][5] != "-"
    assert listed.splitlines()[-2:] == ["(times in UTC)", "2 shown; that is the end of the list"]
    assert secret not in listed

    revoked = run_loa("apikey", "revoke", prefix, env=env)
    assert revoked.stdout.strip() == f"API key {prefix} ('Phòng truyền thông', approver) revoked"
    with pytest.raises(NotAuthenticated, match="was revoked"), session_scope(engine) as session:
        verify_key(session, key, now=system_clock())

    again = run_loa("apikey", "revoke", prefix, env=env, check=False)
    assert again.returncode == 1
    assert again.stderr.startswith(f"Error: API key {prefix} was already revoked at ")
    assert len(again.stderr.strip().splitlines()) == 1
    engine.dispose()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--role", "district"], "Error: a district key needs the area it serves (--area CODE)"),
        (["--role", "operator", "--area", "440"], "Error: only district keys have an area"),
        (["--role", "boss"], "Error: unknown role 'boss'"),
        (["--role", "operator", "--expires-days", "0"], "Error: a key's lifetime must be positive"),
    ],
)
def test_cli_create_errors_are_one_line(
    args: list[str], says: str, db_url: str, tmp_path: Path
) -> None:
    result = run_loa("apikey", "create", *args, env=loa_env(db_url, tmp_path), check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(says)
    assert len(result.stderr.strip().splitlines()) == 1
