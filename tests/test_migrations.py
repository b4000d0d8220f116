"""The migrations build the whole schema from an empty database on both backends."""

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import loa.models  # noqa: F401
from loa import schema
from loa.db import make_engine
from loa.errors import SchemaOutOfDate
from loa.settings import Settings

EXPECTED_TABLES = {
    "area",
    "recipient",
    "recipient_date",
    "suppression",
    "template",
    "campaign",
    "wave",
    "outbox",
    "delivery_event",
    "api_key",
    "audit_log",
    "consent",
    "segment",
    "audio_asset",
    "stats_rollup",
    "stats_rollup_wave",
    "stats_rollup_area",
    "worker",
    "idempotency_key",
    "cache_generation",
}


def test_upgrade_from_empty_builds_the_schema_the_code_expects(
    empty_db_url: str, tmp_path: Path
) -> None:
    engine = make_engine(Settings(database_url=empty_db_url, data_dir=tmp_path))
    with pytest.raises(SchemaOutOfDate, match="loa db upgrade"):
        schema.require_current(engine)

    schema.upgrade(engine)
    schema.upgrade(engine)  # a second run is a no-op, not an error

    schema.require_current(engine)
    assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(
                conn,
                opts={"compare_type": True, "include_object": schema.exists_on(engine.name)},
            ),
            SQLModel.metadata,
        )
    assert diff == []
    engine.dispose()


def test_outbox_has_the_idempotency_key(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(Settings(database_url=db_url, data_dir=tmp_path))
    uniques = inspect(engine).get_unique_constraints("outbox")
    assert {
        "name": "uq_outbox_recipient_wave_channel",
        "column_names": ["recipient_id", "wave_id", "channel"],
    }.items() <= {
        k: v
        for u in uniques
        for k, v in u.items()
        if k in ("name", "column_names") and u["name"] == "uq_outbox_recipient_wave_channel"
    }.items()
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(Settings(data_dir=tmp_path, sqlite_busy_timeout_ms=4321))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 4321
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert (tmp_path / "loa.db").exists()
    engine.dispose()


def test_upgrade_to_0002_indexes_dates_already_in_recipients(
    empty_db_url: str, tmp_path: Path
) -> None:
    from alembic import command
    from sqlalchemy import text

    engine = make_engine(Settings(database_url=empty_db_url, data_dir=tmp_path))
    config = schema._alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO recipient (phone, attributes, phone_converted, created_at, updated_at)"
                " VALUES (:p, :a, false, '2026-05-01 00:00:00', '2026-05-01 00:00:00')"
            ),
            [
                {"p": "+84912000001", "a": '{"card_expiry": "2026-05-15", "dia_chi": "Thôn 1"}'},
                {"p": "+84912000002", "a": '{"card_expiry": "2026-02-30"}'},  # not a real date
                {"p": "+84912000003", "a": "{}"},
            ],
        )
    schema.upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT attribute, value FROM recipient_date ORDER BY recipient_id")
        ).all()
    assert [(a, str(v)) for a, v in rows] == [("card_expiry", "2026-05-15")]
    engine.dispose()


def test_0004_keeps_outbox_rows_and_events_and_downgrades(
    empty_db_url: str, tmp_path: Path
) -> None:
    """Dropping the foreign keys rebuilds both tables on SQLite: nothing in them may be lost,
    and the idempotency key still refuses a second row for the same recipient and wave."""
    from alembic import command
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    engine = make_engine(Settings(database_url=empty_db_url, data_dir=tmp_path))
    config = schema._alembic_config()

    def migrate(to: str, *, down: bool = False) -> None:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(config, to)

    t = "'2026-05-01 00:00:00'"
    migrate("0003")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO recipient (id, phone, attributes, phone_converted, created_at, "
                f"updated_at) VALUES (7, '+84912000001', '{{}}', false, {t}, {t})"
            )
        )
        conn.execute(
            text(
                "INSERT INTO campaign (id, name, status, timezone, spec, created_by, created_at, "
                f"updated_at) VALUES (1, 'c', 'running', 'Asia/Ho_Chi_Minh', '{{}}', 'x', {t}, {t})"
            )
        )
        conn.execute(
            text(
                "INSERT INTO wave (id, campaign_id, position, name, channel, message_class, "
                "status, trigger, audience, options, kind, expanded_count) VALUES "
                "(3, 1, 0, 'w', 'sms', 'info', 'expanded', '{}', '{}', '{}', 'once', 1)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO outbox (id, wave_id, recipient_id, channel, status, due_at, "
                f"attempts, created_at, updated_at) VALUES (11, 3, 7, 'sms', 'sent', {t}, 1, {t}, "
                f"{t})"
            )
        )
        conn.execute(
            text(
                "INSERT INTO delivery_event (message_id, wave_id, channel, kind, status, "
                f"occurred_at) VALUES (11, 3, 'sms', 'status', 'sent', {t})"
            )
        )

    for step in ("head", "0003", "head"):
        migrate(step, down=step == "0003")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, status FROM outbox")).all() == [(11, "sent")]
            assert conn.execute(text("SELECT message_id FROM delivery_event")).all() == [(11,)]
    assert not inspect(engine).get_foreign_keys("outbox")
    assert not inspect(engine).get_foreign_keys("delivery_event")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO outbox (wave_id, recipient_id, channel, status, due_at, attempts, "
                f"created_at, updated_at) VALUES (3, 7, 'sms', 'planned', {t}, 0, {t}, {t})"
            )
        )
    engine.dispose()


def test_0007_keeps_recipients_tags_and_dates_and_downgrades(
    empty_db_url: str, tmp_path: Path
) -> None:
    """Dropping the recipient tables' foreign keys rebuilds them on SQLite: nothing in them may
    be lost, and the phone stays unique. The tags move into recipient.tags (0017) and back."""
    from alembic import command
    from sqlalchemy import select, text
    from sqlalchemy.exc import IntegrityError

    from loa.db import session_scope
    from loa.models import Recipient

    engine = make_engine(Settings(database_url=empty_db_url, data_dir=tmp_path))
    config = schema._alembic_config()

    def migrate(to: str, *, down: bool = False) -> None:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(config, to)

    t = "'2026-05-01 00:00:00'"
    migrate("0006")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO area (code, name, level, path) VALUES ('42', 'P', 'province', '42')")
        )
        conn.execute(
            text(
                "INSERT INTO recipient (id, phone, area_code, attributes, phone_converted, "
                f"created_at, updated_at) VALUES (7, '+84912000001', '42', '{{}}', false, {t}, {t})"
            )
        )
        conn.execute(
            text(
                "INSERT INTO recipient_tag (recipient_id, tag) "
                "VALUES (7, 'nong-dan'), (7, 'ho-ngheo')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO recipient_date (recipient_id, attribute, value) "
                "VALUES (7, 'card_expiry', '2026-05-15')"
            )
        )

    def contents() -> tuple[object, ...]:
        with engine.connect() as conn:
            return (
                conn.execute(text("SELECT id, phone, area_code FROM recipient")).all(),
                conn.execute(text("SELECT recipient_id, attribute FROM recipient_date")).all(),
            )

    def tags() -> list[tuple[int | None, str]]:
        """The tags, from recipient_tag before 0017 and from recipient.tags after it."""
        with session_scope(engine) as session:
            if "recipient_tag" in inspect(engine).get_table_names():
                rows = session.execute(text("SELECT recipient_id, tag FROM recipient_tag"))
                return sorted((id_, tag) for id_, tag in rows)
            return [(r.id, tag) for r in session.scalars(select(Recipient)) for tag in r.tags]

    expected = contents()
    assert tags() == [(7, "ho-ngheo"), (7, "nong-dan")]
    for step in ("head", "0006", "head"):
        migrate(step, down=step == "0006")
        assert contents() == expected
        # Moved both ways, and stored sorted in the column.
        assert tags() == [(7, "ho-ngheo"), (7, "nong-dan")]
    assert "recipient_tag" not in inspect(engine).get_table_names()
    for table in ("recipient", "recipient_date"):
        assert not inspect(engine).get_foreign_keys(table)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO recipient (phone, attributes, phone_converted, created_at, "
                f"updated_at) VALUES ('+84912000001', '{{}}', false, {t}, {t})"
            )
        )
    engine.dispose()


def test_sqlite_readers_do_not_wait_for_the_writer(tmp_path: Path) -> None:
    """A read-only unit of work begins DEFERRED: it reads while another connection holds the
    write lock (WAL), where an ordinary one (BEGIN IMMEDIATE) cannot even start."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from loa.db import read_only, session_scope

    engine = make_engine(Settings(data_dir=tmp_path, sqlite_busy_timeout_ms=100))
    schema.upgrade(engine)
    with session_scope(engine) as writer:
        writer.execute(
            text("INSERT INTO area (code, name, level, path) VALUES ('42', 'P', 'p', '/42/')")
        )
        with session_scope(read_only(engine)) as reader:
            assert reader.execute(text("SELECT count(*) FROM area")).scalar() == 0  # not committed
        with pytest.raises(OperationalError, match="locked"), session_scope(engine) as other:
            other.execute(text("SELECT 1"))
    with session_scope(read_only(engine)) as reader:
        assert reader.execute(text("SELECT count(*) FROM area")).scalar() == 1
    engine.dispose()


def test_0012_worker_table_downgrades_and_upgrades(empty_db_url: str, tmp_path: Path) -> None:
    from alembic import command

    engine = make_engine(Settings(database_url=empty_db_url, data_dir=tmp_path))
    config = schema._alembic_config()
    schema.upgrade(engine)
    assert "worker" in inspect(engine).get_table_names()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0011")
    assert "worker" not in inspect(engine).get_table_names()
    schema.upgrade(engine)
    assert [i["name"] for i in inspect(engine).get_indexes("worker")] == ["ix_worker_seen_at"]
    engine.dispose()
