"""stats_rollup: delivery statistics kept by database triggers, in the transaction of each change

One row per key (wave, channel, commune, carrier, adapter, status, error code, UTC hour) with the
messages now in that key (n) and their segments; and the same without the commune in
stats_rollup_wave, for the questions that need no area (by day, carrier or error code over the
whole province would otherwise read a row per commune, hundreds per wave and status). Triggers on
`outbox` move a message's count from its old key to its new one in the same transaction as the
change, whoever makes it (dispatch, webhooks, reconciliation, the tick's sweeps, a person with
psql): no code path can forget it, and `GET /api/v1/stats` reads rollup rows instead of millions
of messages.

Loudspeaker plays (broadcast_play) go into the same tables (channel 'loudspeaker', status the
play's result, area the commune, hour the play's start): statistics per campaign, wave, area and
day then come from one place with one set of filters, and no outbox row is ever on channel
'loudspeaker' (a loudspeaker wave is never in the outbox), so the two cannot be confused.

Key columns hold '' instead of NULL: NULLs are never equal in a unique key, so an upsert could
not find the row to add to.

`hour` is hours since 1970-01-01 00:00 UTC of a time that never changes on the row:
- messages: `created_at`, the instant the wave fired and was expanded, which is when the wave was
  planned to go out (a scheduler tick after its time). Not `due_at`: retries, frequency caps,
  closed windows and reconciliation move it, which would move a message from day to day in the
  statistics (and make each of those updates a rollup write);
- plays: `started_at`, when it was played.
Local days are made from these hours at query time (stats/rollup.py).

PostgreSQL: statement-level triggers with transition tables, so that a claim of 500 messages is
one aggregated upsert, not 1,000; rows are upserted in key order, so that concurrent workers lock
rollup rows in the same order and cannot deadlock on them. (Transition tables cannot be combined
with `UPDATE OF columns`: the update trigger runs for every UPDATE of the outbox, and a row whose
key and segments did not change adds and takes away the same, which writes nothing.)
SQLite: row-level triggers (it has no transition tables), limited to updates of the key columns.

Beware on SQLite: a later migration that rebuilds `outbox` or `broadcast_play` (batch_alter_table
copies the table) drops these triggers with it; it must create them again. tests/test_rollup.py
checks they are there at head.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 10:00:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ("wave_id", "channel", "area_code", "carrier", "adapter", "status", "error_code", "hour")
# Each rollup table and its key: the full one, and the same without the area (a few rows per
# wave), which answers every question that neither groups nor filters by area without reading
# the hundreds of communes' rows. Always written in this order (the lock order, with the keys').
ROLLUPS = {
    "stats_rollup": KEY,
    "stats_rollup_wave": tuple(k for k in KEY if k != "area_code"),
}
FILLFACTOR = 70
# The outbox columns a rollup key or measure is made of: an update touching none of them (a new
# due_at, a lease) cannot change the rollup, and SQLite's row trigger does not run for it.
_OUTBOX_COLUMNS = (
    "wave_id",
    "channel",
    "area_code",
    "carrier",
    "adapter",
    "status",
    "error_code",
    "created_at",
    "segments",
)


def _hour(column: str, dialect: str) -> str:
    """Hours since 1970 (UTC) of a timestamp column."""
    if dialect == "postgresql":
        return f"floor(extract(epoch FROM {column}) / 3600)::integer"
    # SQLAlchemy stores UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' text on SQLite.
    return f"CAST(strftime('%s', {column}) AS INTEGER) / 3600"


def _message_key(row: str, dialect: str) -> dict[str, str]:
    """The rollup key of an outbox row (alias `row`): column -> expression, in KEY order."""
    return {
        "wave_id": f"{row}.wave_id",
        "channel": f"{row}.channel",
        "area_code": f"coalesce({row}.area_code, '')",
        "carrier": f"coalesce({row}.carrier, '')",
        "adapter": f"coalesce({row}.adapter, '')",
        "status": f"{row}.status",
        "error_code": f"coalesce({row}.error_code, '')",
        "hour": _hour(f"{row}.created_at", dialect),
    }


def _play_key(row: str, dialect: str) -> dict[str, str]:
    """The rollup key of a broadcast_play row."""
    return {
        "wave_id": f"{row}.wave_id",
        "channel": "'loudspeaker'",
        "area_code": f"{row}.commune_code",
        "carrier": "''",
        "adapter": "''",
        "status": f"{row}.result",
        "error_code": "''",
        "hour": _hour(f"{row}.started_at", dialect),
    }


def _select(key: dict[str, str], keys: Sequence[str] = KEY) -> str:
    return ", ".join(key[k] for k in keys)


# --- PostgreSQL -----------------------------------------------------------------------------


def _pg_upserts(deltas: str) -> str:
    """Add `deltas` (rows of KEY..., dn, dseg) to each rollup table: summed per key, keys whose
    sums are both zero left out, in key order (the lock order every transaction shares)."""
    statements = []
    for table, keys in ROLLUPS.items():
        columns = ", ".join(keys)
        statements.append(
            f"""
            INSERT INTO {table} AS r ({columns}, n, segments)
            SELECT {columns}, sum(dn), sum(dseg) FROM ({deltas}) AS d ({", ".join(KEY)}, dn, dseg)
            GROUP BY {columns}
            HAVING sum(dn) <> 0 OR sum(dseg) <> 0
            ORDER BY {columns}
            ON CONFLICT ({columns}) DO UPDATE
            SET n = r.n + excluded.n, segments = r.segments + excluded.segments;
            """
        )
    return "".join(statements)


def _pg_function(name: str, body: str) -> str:
    return f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
            {body}
            RETURN NULL;
        END
        $fn$
    """


def _pg_functions() -> dict[str, str]:
    old, new = _message_key("o", "postgresql"), _message_key("x", "postgresql")
    return {
        "stats_rollup_outbox_insert": _pg_upserts(
            f"SELECT {_select(new)}, 1, coalesce(x.segments, 0) FROM new_rows x"
        ),
        # Every old row taken out of its key and every new row added to its own, summed per key:
        # a row whose key and segments did not change cancels out, and its key is not written
        # (the upsert keeps only non-zero sums). No join of the old and new rows on id: the
        # planner knows nothing of transition tables and chose a nested loop, 500 x 500 row
        # comparisons for each statement of a batch of 500.
        "stats_rollup_outbox_update": _pg_upserts(
            f"SELECT {_select(old)}, -1, -coalesce(o.segments, 0) FROM old_rows o UNION ALL "
            f"SELECT {_select(new)}, 1, coalesce(x.segments, 0) FROM new_rows x"
        ),
        "stats_rollup_outbox_delete": _pg_upserts(
            f"SELECT {_select(old)}, -1, -coalesce(o.segments, 0) FROM old_rows o"
        ),
        "stats_rollup_play_insert": _pg_upserts(
            f"SELECT {_select(_play_key('x', 'postgresql'))}, 1, 0 FROM new_rows x"
        ),
        "stats_rollup_play_delete": _pg_upserts(
            f"SELECT {_select(_play_key('o', 'postgresql'))}, -1, 0 FROM old_rows o"
        ),
    }


# (trigger = its function, table, event, transition tables)
_PG_TRIGGERS = (
    ("stats_rollup_outbox_insert", "outbox", "INSERT", "NEW TABLE AS new_rows"),
    ("stats_rollup_outbox_update", "outbox", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ("stats_rollup_outbox_delete", "outbox", "DELETE", "OLD TABLE AS old_rows"),
    ("stats_rollup_play_insert", "broadcast_play", "INSERT", "NEW TABLE AS new_rows"),
    ("stats_rollup_play_delete", "broadcast_play", "DELETE", "OLD TABLE AS old_rows"),
)


def _pg_create_triggers() -> None:
    for name, body in _pg_functions().items():
        op.execute(_pg_function(name, body))
    for name, table, event, transition in _PG_TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {transition} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )


def _pg_drop_triggers() -> None:
    for name, table, _, _ in _PG_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")


# --- SQLite ---------------------------------------------------------------------------------


def _sqlite_upserts(key: dict[str, str], dn: str, dseg: str) -> str:
    statements = []
    for table, keys in ROLLUPS.items():
        columns = ", ".join(keys)
        # VALUES, not SELECT: an upsert after a SELECT without WHERE would be parsed as a
        # join's ON.
        statements.append(
            f"INSERT INTO {table} ({columns}, n, segments) VALUES ({_select(key, keys)}, {dn}, "
            f"{dseg}) ON CONFLICT ({columns}) DO UPDATE SET n = {table}.n + excluded.n, "
            f"segments = {table}.segments + excluded.segments;"
        )
    return " ".join(statements)


def _sqlite_triggers() -> dict[str, str]:
    old_key, new_key = _message_key("OLD", "sqlite"), _message_key("NEW", "sqlite")
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in _OUTBOX_COLUMNS)
    remove_old = _sqlite_upserts(old_key, "-1", "-coalesce(OLD.segments, 0)")
    add_new = _sqlite_upserts(new_key, "1", "coalesce(NEW.segments, 0)")
    return {
        "stats_rollup_outbox_insert": f"AFTER INSERT ON outbox BEGIN {add_new} END",
        "stats_rollup_outbox_update": (
            f"AFTER UPDATE OF {', '.join(_OUTBOX_COLUMNS)} ON outbox WHEN {changed} "
            f"BEGIN {remove_old} {add_new} END"
        ),
        "stats_rollup_outbox_delete": f"AFTER DELETE ON outbox BEGIN {remove_old} END",
        "stats_rollup_play_insert": (
            "AFTER INSERT ON broadcast_play BEGIN "
            f"{_sqlite_upserts(_play_key('NEW', 'sqlite'), '1', '0')} END"
        ),
        "stats_rollup_play_delete": (
            "AFTER DELETE ON broadcast_play BEGIN "
            f"{_sqlite_upserts(_play_key('OLD', 'sqlite'), '-1', '0')} END"
        ),
    }


# --- both -----------------------------------------------------------------------------------


def _backfill(dialect: str) -> None:
    """The rollups of the rows already there, in one statement per table and source."""
    sources = (
        ("outbox o", _message_key("o", dialect), "coalesce(sum(o.segments), 0)"),
        ("broadcast_play o", _play_key("o", dialect), "0"),
    )
    for table, keys in ROLLUPS.items():
        # By position: PostgreSQL refuses the key's constants ('') as GROUP BY expressions.
        by_key = ", ".join(str(i + 1) for i in range(len(keys)))
        for source, key, segments in sources:
            op.execute(
                f"INSERT INTO {table} ({', '.join(keys)}, n, segments) "
                f"SELECT {_select(key, keys)}, count(*), {segments} FROM {source} GROUP BY {by_key}"
            )


def _create_table(name: str, keys: Sequence[str]) -> None:
    types: dict[str, sa.types.TypeEngine[Any]] = {
        "wave_id": sa.Integer(),
        "channel": sa.String(length=32),
        "area_code": sa.String(length=16),
        "carrier": sa.String(length=32),
        "adapter": sa.String(length=64),
        "status": sa.String(length=16),
        "error_code": sa.String(length=32),
        "hour": sa.Integer(),
    }
    op.create_table(
        name,
        *(sa.Column(k, types[k], nullable=False) for k in keys),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("segments", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*keys),
        # Every change of a message updates a few rollup rows: room in each page lets PostgreSQL
        # write the new version beside the old (a HOT update, no index entry) and prune the old
        # one, instead of growing the table with each version.
        postgresql_with={"fillfactor": FILLFACTOR},
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table, keys in ROLLUPS.items():
        _create_table(table, keys)
    # Triggers first, then the backfill, in one transaction: on PostgreSQL creating a trigger
    # locks the table against writes until commit, so no change falls between the two.
    if dialect == "postgresql":
        _pg_create_triggers()
    else:
        for name, body in _sqlite_triggers().items():
            op.execute(f"CREATE TRIGGER {name} {body}")
    _backfill(dialect)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _pg_drop_triggers()
    else:
        for name in _sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    for table in ROLLUPS:
        op.drop_table(table)
