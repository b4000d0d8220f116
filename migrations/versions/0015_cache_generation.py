"""cache_generation: a counter per table whose changes the API's in-process caches must see

The API keeps verified keys (by prefix) and area paths in memory, so that a warm pull of a
playlist reads nothing from the database (api/readcache.py). A cache is dropped when its
generation moves; the API reads the generations at most every LOA_CACHE_RECHECK_SECONDS, so every
process, on every machine, sees a revocation or a moved area within that bound.

Triggers bump the counters in the transaction of the change, whoever makes it (the API, the CLI,
a person with psql):
- `api_key`: an update of what verification reads (revoked_at, expires_at, role, area_code,
  secret_hash, prefix) or a delete. Not last_used_at (stamped once a minute per key: that must
  not empty every process's cache) and not inserts (a new key is not in any cache yet).
- `area`: any insert, update or delete (an import moves areas, and paths decide access).

PostgreSQL: statement-level triggers (an import of 11,000 areas bumps once per statement).
SQLite: row-level triggers (it has no statement-level ones).

Beware on SQLite: a later migration that rebuilds `api_key` or `area` (batch_alter_table copies
the table) drops these triggers with it; it must create them again. tests/test_readcache.py
checks they are there at head.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-11 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY_COLUMNS = "revoked_at, expires_at, role, area_code, secret_hash, prefix"
# (trigger name, table, events): PostgreSQL and SQLite spell them alike.
TRIGGERS = (
    ("cache_generation_api_key_update", "api_key", f"UPDATE OF {KEY_COLUMNS}"),
    ("cache_generation_api_key_delete", "api_key", "DELETE"),
    ("cache_generation_area_insert", "area", "INSERT"),
    ("cache_generation_area_update", "area", "UPDATE"),
    ("cache_generation_area_delete", "area", "DELETE"),
)


def upgrade() -> None:
    op.create_table(
        "cache_generation",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.execute("INSERT INTO cache_generation (name, value) VALUES ('api_key', 0), ('area', 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION cache_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $fn$
            BEGIN
                UPDATE cache_generation SET value = value + 1 WHERE name = TG_TABLE_NAME;
                RETURN NULL;
            END
            $fn$
            """
        )
        for name, table, event in TRIGGERS:
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION cache_generation_bump()"
            )
        return
    for name, table, event in TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW BEGIN "
            f"UPDATE cache_generation SET value = value + 1 WHERE name = '{table}'; END"
        )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, table, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgresql else ""))
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS cache_generation_bump()")
    op.drop_table("cache_generation")
