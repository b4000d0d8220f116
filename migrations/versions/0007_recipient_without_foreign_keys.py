"""recipient, recipient_tag and recipient_date without foreign keys

PostgreSQL checks a foreign key row by row with a trigger that also locks the parent row. In an
import of a million recipients those checks were a quarter of the server's time (EXPLAIN ANALYZE
of a 10,000-row chunk: 90 of 230 ms for the tags, 57 of 216 ms for the dates, 59 of 450 ms for
the recipients' area). See loa/models.py (Recipient) for why no reference can dangle.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 17:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite keeps these constraints unnamed: batch mode names them by this convention to drop them.
_SQLITE_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s"}


def _fk(table: str, column: str) -> str:
    if op.get_bind().dialect.name == "sqlite":
        return f"fk_{table}_{column}"
    return f"{table}_{column}_fkey"  # PostgreSQL's default name


def upgrade() -> None:
    # The children first: while they reference recipient, SQLite cannot rebuild it.
    for table in ("recipient_tag", "recipient_date"):
        with op.batch_alter_table(table, naming_convention=_SQLITE_NAMES) as batch_op:
            batch_op.drop_constraint(_fk(table, "recipient_id"), type_="foreignkey")
    with op.batch_alter_table("recipient", naming_convention=_SQLITE_NAMES) as batch_op:
        batch_op.drop_constraint(_fk("recipient", "area_code"), type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("recipient", naming_convention=_SQLITE_NAMES) as batch_op:
        batch_op.create_foreign_key(_fk("recipient", "area_code"), "area", ["area_code"], ["code"])
    for table in ("recipient_tag", "recipient_date"):
        with op.batch_alter_table(table, naming_convention=_SQLITE_NAMES) as batch_op:
            batch_op.create_foreign_key(
                _fk(table, "recipient_id"),
                "recipient",
                ["recipient_id"],
                ["id"],
                ondelete="CASCADE",
            )
