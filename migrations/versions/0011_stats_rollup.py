"""stats_rollup: delivery statistics kept by database triggers, in the transaction of each change

One row per key (wave, channel, commune, carrier, adapter, status, error code, UTC hour) with the
messages now in that key (n) and their segments. Triggers on `outbox` move a message's count from
its old key to its new one in the same transaction as the change, whoever makes it (dispatch,
webhooks, reconciliation, the tick's sweeps, a person with psql): no code path can forget it,
and `GET /api/v1/stats` reads a few thousand rollup rows instead of millions of messages.

Loudspeaker plays (broadcast_play) go into the same table (channel 'loudspeaker', status the
play's result, area the commune, hour the play's start): statistics per campaign, wave, area and
day then come from one table with one set of filters, and no outbox row is ever on channel
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
with `UPDATE OF columns`: the update trigger runs for every UPDATE of the outbox and finds the
rows whose key or segments changed by joining the old and new rows on id.)
SQLite: row-level triggers (it has no transition tables), limited to updates of the key columns.

Beware on SQLite: a later migration that rebuilds `outbox` or `broadcast_play` (batch_alter_table
copies the table) drops these triggers with it; it must create them again. tests/test_rollup.py
checks they are there at head.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ("wave_id", "channel", "area_code", "carrier", "adapter", "status", "error_code", "hour")
_KEY_LIST = ", ".join(KEY)
# The outbox columns a rollup key or measure is made of: an update touching none of them (a new
# due_at, a lease) cannot change the rollup.
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


def _message_key(row: str, dialect: str) -> str:
    """The rollup key of an outbox row (alias `row`), in KEY order."""
    return (
        f"{row}.wave_id, {row}.channel, coalesce({row}.area_code, ''), "
        f"coalesce({row}.carrier, ''), coalesce({row}.adapter, ''), {row}.status, "
        f"coalesce({row}.error_code, ''), {_hour(f'{row}.created_at', dialect)}"
    )


def _play_key(row: str, dialect: str) -> str:
    """The rollup key of a broadcast_play row."""
    return (
        f"{row}.wave_id, 'loudspeaker', {row}.commune_code, '', '', {row}.result, '', "
        f"{_hour(f'{row}.started_at', dialect)}"
    )


# --- PostgreSQL -----------------------------------------------------------------------------


def _pg_upsert(deltas: str) -> str:
    """Add `deltas` (rows of KEY..., dn, dseg) to the rollup: summed per key, keys whose sums are
    both zero left out, in key order (the lock order every transaction shares)."""
    return f"""
        INSERT INTO stats_rollup AS r ({_KEY_LIST}, n, segments)
        SELECT {_KEY_LIST}, sum(dn), sum(dseg) FROM ({deltas}) AS d ({_KEY_LIST}, dn, dseg)
        GROUP BY {_KEY_LIST}
        HAVING sum(dn) <> 0 OR sum(dseg) <> 0
        ORDER BY {_KEY_LIST}
        ON CONFLICT ({_KEY_LIST}) DO UPDATE
        SET n = r.n + excluded.n, segments = r.segments + excluded.segments
    """


def _pg_function(name: str, body: str) -> str:
    return f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
            {body};
            RETURN NULL;
        END
        $fn$
    """


def _pg_changed(old: str, new: str) -> str:
    columns = ", ".join(f"{{r}}.{c}" for c in _OUTBOX_COLUMNS)
    return f"({columns.format(r=old)}) IS DISTINCT FROM ({columns.format(r=new)})"


_PG_FUNCTIONS = {
    "stats_rollup_outbox_insert": _pg_upsert(
        f"SELECT {_message_key('x', 'postgresql')}, 1, coalesce(x.segments, 0) FROM new_rows x"
    ),
    "stats_rollup_outbox_update": _pg_upsert(
        f"SELECT v.* FROM old_rows o JOIN new_rows x ON x.id = o.id, LATERAL (VALUES "
        f"({_message_key('o', 'postgresql')}, -1, -coalesce(o.segments, 0)), "
        f"({_message_key('x', 'postgresql')}, 1, coalesce(x.segments, 0))) AS v "
        f"WHERE {_pg_changed('o', 'x')}"
    ),
    "stats_rollup_outbox_delete": _pg_upsert(
        f"SELECT {_message_key('o', 'postgresql')}, -1, -coalesce(o.segments, 0) FROM old_rows o"
    ),
    "stats_rollup_play_insert": _pg_upsert(
        f"SELECT {_play_key('x', 'postgresql')}, 1, 0 FROM new_rows x"
    ),
    "stats_rollup_play_delete": _pg_upsert(
        f"SELECT {_play_key('o', 'postgresql')}, -1, 0 FROM old_rows o"
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
    for name, body in _PG_FUNCTIONS.items():
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


def _sqlite_upsert(key: str, dn: str, dseg: str) -> str:
    # VALUES, not SELECT: an upsert after a SELECT without WHERE would be parsed as a join's ON.
    return (
        f"INSERT INTO stats_rollup ({_KEY_LIST}, n, segments) VALUES ({key}, {dn}, {dseg}) "
        f"ON CONFLICT ({_KEY_LIST}) DO UPDATE SET n = stats_rollup.n + excluded.n, "
        "segments = stats_rollup.segments + excluded.segments;"
    )


def _sqlite_triggers() -> dict[str, str]:
    old_key, new_key = _message_key("OLD", "sqlite"), _message_key("NEW", "sqlite")
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in _OUTBOX_COLUMNS)
    remove_old = _sqlite_upsert(old_key, "-1", "-coalesce(OLD.segments, 0)")
    add_new = _sqlite_upsert(new_key, "1", "coalesce(NEW.segments, 0)")
    return {
        "stats_rollup_outbox_insert": f"AFTER INSERT ON outbox BEGIN {add_new} END",
        "stats_rollup_outbox_update": (
            f"AFTER UPDATE OF {', '.join(_OUTBOX_COLUMNS)} ON outbox WHEN {changed} "
            f"BEGIN {remove_old} {add_new} END"
        ),
        "stats_rollup_outbox_delete": f"AFTER DELETE ON outbox BEGIN {remove_old} END",
        "stats_rollup_play_insert": (
            "AFTER INSERT ON broadcast_play BEGIN "
            f"{_sqlite_upsert(_play_key('NEW', 'sqlite'), '1', '0')} END"
        ),
        "stats_rollup_play_delete": (
            "AFTER DELETE ON broadcast_play BEGIN "
            f"{_sqlite_upsert(_play_key('OLD', 'sqlite'), '-1', '0')} END"
        ),
    }


# --- both -----------------------------------------------------------------------------------


def _backfill(dialect: str) -> None:
    """The rollup of the rows already there, in one statement per table."""
    # By position: PostgreSQL refuses the key's constants ('') as GROUP BY expressions.
    by_key = ", ".join(str(i + 1) for i in range(len(KEY)))
    op.execute(
        f"INSERT INTO stats_rollup ({_KEY_LIST}, n, segments) "
        f"SELECT {_message_key('o', dialect)}, count(*), coalesce(sum(o.segments), 0) "
        f"FROM outbox o GROUP BY {by_key}"
    )
    op.execute(
        f"INSERT INTO stats_rollup ({_KEY_LIST}, n, segments) "
        f"SELECT {_play_key('p', dialect)}, count(*), 0 FROM broadcast_play p GROUP BY {by_key}"
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "stats_rollup",
        sa.Column("wave_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("area_code", sa.String(length=16), nullable=False),
        sa.Column("carrier", sa.String(length=32), nullable=False),
        sa.Column("adapter", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=32), nullable=False),
        sa.Column("hour", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("segments", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*KEY),
    )
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
    op.drop_table("stats_rollup")
