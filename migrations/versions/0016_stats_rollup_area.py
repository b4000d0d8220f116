"""stats_rollup_area: the rollup per commune without wave or time; an index by area and hour; the
rollups follow a TRUNCATE

Questions by area over every campaign and all time (the operator page's delivery rate per
district, failures by reason in a district) read the whole of stats_rollup, one row per wave x
commune x carrier x adapter x status x error code x UTC hour: 148,434 rows for 3,000,000 messages
in bench/stats.py, 55 to 70 ms, and more with every wave sent. stats_rollup_area keeps one row
per commune x channel x status x error code x carrier x adapter x message class, with neither
the wave nor the hour: its size is bounded by the communes, statuses, error codes, carriers,
adapters and classes there are (39,000 rows on the bench), however many waves are sent. The
carrier, adapter and class stay in the key because LOA_SMS_PRICES prices a segment by them (a
setting, so the rollup cannot price at write time); the class is the wave's, read when the row is
written (a wave's class cannot change once it has messages: only drafts are edited).

Day-bounded questions by area (a district's communes by day, for a week) read stats_rollup by
the new index (area_code, hour) instead of the whole table. The index holds no column a trigger
updates (n, segments), so the triggers' updates stay HOT.

Kept by their own triggers on outbox and broadcast_play, with the rules of migration 0011: the
same statement-level triggers with transition tables on PostgreSQL, upserts in key order. They
are named stats_rollup_area_*, and PostgreSQL fires the triggers of one event in name order, so
every transaction writes stats_rollup_area's rows before stats_rollup's and stats_rollup_wave's:
one lock order for all. SQLite: row-level triggers, as 0011's.

TRUNCATE: a TRUNCATE of `outbox` or `broadcast_play` fires no row or statement trigger for the
rows it removes, so the rollups kept counting them. A statement-level AFTER TRUNCATE trigger now
clears what that table put in the three rollups (outbox: every channel but 'loudspeaker';
broadcast_play: 'loudspeaker'), in the TRUNCATE's transaction. SQLite has no TRUNCATE (its
`DELETE FROM` without WHERE runs the delete triggers when there are any).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-12 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "stats_rollup_area"
# The key, in the order of the primary key and of the upserts (the lock order). The area first:
# an area filter reads a range of the primary key.
AREA_KEY = ("area_code", "channel", "status", "error_code", "carrier", "adapter", "message_class")
FILLFACTOR = 70  # as 0011's: room for HOT updates
ALL_ROLLUPS = ("stats_rollup", "stats_rollup_wave", TABLE)
_OUTBOX_COLUMNS = ("wave_id", "channel", "area_code", "carrier", "adapter", "status", "error_code")
_CLASS = "coalesce((SELECT w.message_class FROM wave w WHERE w.id = {row}.wave_id), '')"


def _message_key(row: str) -> dict[str, str]:
    """The key of an outbox row (alias `row`), without the class (read from the wave)."""
    return {
        "wave_id": f"{row}.wave_id",
        "area_code": f"coalesce({row}.area_code, '')",
        "channel": f"{row}.channel",
        "status": f"{row}.status",
        "error_code": f"coalesce({row}.error_code, '')",
        "carrier": f"coalesce({row}.carrier, '')",
        "adapter": f"coalesce({row}.adapter, '')",
    }


def _play_key(row: str) -> dict[str, str]:
    return {
        "wave_id": f"{row}.wave_id",
        "area_code": f"{row}.commune_code",
        "channel": "'loudspeaker'",
        "status": f"{row}.result",
        "error_code": "''",
        "carrier": "''",
        "adapter": "''",
    }


_DELTA = ("wave_id", "area_code", "channel", "status", "error_code", "carrier", "adapter")


def _select(key: dict[str, str]) -> str:
    return ", ".join(key[k] for k in _DELTA)


# --- PostgreSQL -----------------------------------------------------------------------------


def _pg_upsert(deltas: str) -> str:
    """Add `deltas` (rows of _DELTA..., dn, dseg) to stats_rollup_area: the wave's class looked up
    once per wave of the statement, summed per key, zero sums left out, in key order."""
    columns = ", ".join(AREA_KEY)
    inner = ", ".join(f"d.{k}" for k in AREA_KEY if k != "message_class")
    return f"""
        INSERT INTO {TABLE} AS r ({columns}, n, segments)
        SELECT {inner}, coalesce(w.message_class, ''), sum(d.dn), sum(d.dseg)
        FROM ({deltas}) AS d ({", ".join(_DELTA)}, dn, dseg)
        LEFT JOIN wave w ON w.id = d.wave_id
        GROUP BY {inner}, coalesce(w.message_class, '')
        HAVING sum(d.dn) <> 0 OR sum(d.dseg) <> 0
        ORDER BY {inner}, coalesce(w.message_class, '')
        ON CONFLICT ({columns}) DO UPDATE
        SET n = r.n + excluded.n, segments = r.segments + excluded.segments;
    """


def _pg_functions() -> dict[str, str]:
    old, new = _message_key("o"), _message_key("x")
    return {
        "stats_rollup_area_outbox_insert": _pg_upsert(
            f"SELECT {_select(new)}, 1, coalesce(x.segments, 0) FROM new_rows x"
        ),
        # Old rows out, new rows in, summed per key (see 0011): an unchanged row cancels out.
        "stats_rollup_area_outbox_update": _pg_upsert(
            f"SELECT {_select(old)}, -1, -coalesce(o.segments, 0) FROM old_rows o UNION ALL "
            f"SELECT {_select(new)}, 1, coalesce(x.segments, 0) FROM new_rows x"
        ),
        "stats_rollup_area_outbox_delete": _pg_upsert(
            f"SELECT {_select(old)}, -1, -coalesce(o.segments, 0) FROM old_rows o"
        ),
        "stats_rollup_area_play_insert": _pg_upsert(
            f"SELECT {_select(_play_key('x'))}, 1, 0 FROM new_rows x"
        ),
        "stats_rollup_area_play_delete": _pg_upsert(
            f"SELECT {_select(_play_key('o'))}, -1, 0 FROM old_rows o"
        ),
        # What a TRUNCATE removed, out of every rollup (it fires no delete trigger).
        "stats_rollup_outbox_truncate": "".join(
            f"DELETE FROM {t} WHERE channel <> 'loudspeaker';" for t in ALL_ROLLUPS
        ),
        "stats_rollup_play_truncate": "".join(
            f"DELETE FROM {t} WHERE channel = 'loudspeaker';" for t in ALL_ROLLUPS
        ),
    }


_PG_TRIGGERS = (
    ("stats_rollup_area_outbox_insert", "outbox", "INSERT", "REFERENCING NEW TABLE AS new_rows"),
    (
        "stats_rollup_area_outbox_update",
        "outbox",
        "UPDATE",
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    ),
    ("stats_rollup_area_outbox_delete", "outbox", "DELETE", "REFERENCING OLD TABLE AS old_rows"),
    (
        "stats_rollup_area_play_insert",
        "broadcast_play",
        "INSERT",
        "REFERENCING NEW TABLE AS new_rows",
    ),
    (
        "stats_rollup_area_play_delete",
        "broadcast_play",
        "DELETE",
        "REFERENCING OLD TABLE AS old_rows",
    ),
    ("stats_rollup_outbox_truncate", "outbox", "TRUNCATE", ""),
    ("stats_rollup_play_truncate", "broadcast_play", "TRUNCATE", ""),
)


def _pg_create_triggers() -> None:
    for name, body in _pg_functions().items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$ "
            f"BEGIN {body} RETURN NULL; END $fn$"
        )
    for name, table, event, transition in _PG_TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON {table} {transition} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )


def _pg_drop_triggers() -> None:
    for name, table, _, _ in _PG_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")


# --- SQLite ---------------------------------------------------------------------------------


def _sqlite_upsert(key: dict[str, str], row: str, dn: str, dseg: str) -> str:
    columns = ", ".join(AREA_KEY)
    values = ", ".join(_CLASS.format(row=row) if k == "message_class" else key[k] for k in AREA_KEY)
    return (
        f"INSERT INTO {TABLE} ({columns}, n, segments) VALUES ({values}, {dn}, {dseg}) "
        f"ON CONFLICT ({columns}) DO UPDATE SET n = {TABLE}.n + excluded.n, "
        f"segments = {TABLE}.segments + excluded.segments;"
    )


def _sqlite_triggers() -> dict[str, str]:
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in (*_OUTBOX_COLUMNS, "segments"))
    remove_old = _sqlite_upsert(_message_key("OLD"), "OLD", "-1", "-coalesce(OLD.segments, 0)")
    add_new = _sqlite_upsert(_message_key("NEW"), "NEW", "1", "coalesce(NEW.segments, 0)")
    return {
        "stats_rollup_area_outbox_insert": f"AFTER INSERT ON outbox BEGIN {add_new} END",
        "stats_rollup_area_outbox_update": (
            f"AFTER UPDATE OF {', '.join((*_OUTBOX_COLUMNS, 'segments'))} ON outbox "
            f"WHEN {changed} BEGIN {remove_old} {add_new} END"
        ),
        "stats_rollup_area_outbox_delete": f"AFTER DELETE ON outbox BEGIN {remove_old} END",
        "stats_rollup_area_play_insert": (
            "AFTER INSERT ON broadcast_play BEGIN "
            f"{_sqlite_upsert(_play_key('NEW'), 'NEW', '1', '0')} END"
        ),
        "stats_rollup_area_play_delete": (
            "AFTER DELETE ON broadcast_play BEGIN "
            f"{_sqlite_upsert(_play_key('OLD'), 'OLD', '-1', '0')} END"
        ),
    }


# --- both -----------------------------------------------------------------------------------


def _backfill() -> None:
    """The rows already there, one statement per source (in the migration's transaction, after
    the triggers: no change falls between the two)."""
    columns = ", ".join(AREA_KEY)
    sources = (
        ("outbox o", _message_key("o"), "coalesce(sum(o.segments), 0)"),
        ("broadcast_play o", _play_key("o"), "0"),
    )
    for source, key, segments in sources:
        selected = ", ".join(
            "coalesce(w.message_class, '')" if k == "message_class" else key[k] for k in AREA_KEY
        )
        # By position: PostgreSQL refuses the key's constants ('') as GROUP BY expressions.
        by_key = ", ".join(str(i + 1) for i in range(len(AREA_KEY)))
        op.execute(
            f"INSERT INTO {TABLE} ({columns}, n, segments) "
            f"SELECT {selected}, count(*), {segments} FROM {source} "
            f"LEFT JOIN wave w ON w.id = o.wave_id GROUP BY {by_key}"
        )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    lengths = {
        "area_code": 16,
        "channel": 32,
        "status": 16,
        "error_code": 32,
        "carrier": 32,
        "adapter": 64,
        "message_class": 16,
    }
    op.create_table(
        TABLE,
        *(sa.Column(k, sa.String(length=lengths[k]), nullable=False) for k in AREA_KEY),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("segments", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*AREA_KEY),
        postgresql_with={"fillfactor": FILLFACTOR},
    )
    op.create_index("ix_stats_rollup_area_hour", "stats_rollup", ["area_code", "hour"])
    if dialect == "postgresql":
        _pg_create_triggers()
    else:
        for name, body in _sqlite_triggers().items():
            op.execute(f"CREATE TRIGGER {name} {body}")
    _backfill()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _pg_drop_triggers()
    else:
        for name in _sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_index("ix_stats_rollup_area_hour", table_name="stats_rollup")
    op.drop_table(TABLE)
