"""wave series (recurring and relative waves make one occurrence each) and recipient dates

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:25:28
"""

import re
from collections.abc import Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_BATCH = 5000


def upgrade() -> None:
    op.create_table(
        "recipient_date",
        sa.Column(
            "recipient_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("attribute", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(["recipient_id"], ["recipient.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("recipient_id", "attribute"),
    )
    with op.batch_alter_table("recipient_date", schema=None) as batch_op:
        batch_op.create_index(
            "ix_recipient_date_value", ["attribute", "value", "recipient_id"], unique=False
        )

    with op.batch_alter_table("wave", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="once")
        )
        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("occurrence", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("covered_through", sa.Date(), nullable=True))
        batch_op.create_index("ix_wave_parent_id", ["parent_id"], unique=False)
        batch_op.create_unique_constraint("uq_wave_parent_occurrence", ["parent_id", "occurrence"])
        batch_op.create_foreign_key("fk_wave_parent_id_wave", "wave", ["parent_id"], ["id"])

    _backfill_recipient_dates()


def _backfill_recipient_dates() -> None:
    """Dates already in recipients' attributes (the importer has stored dd/mm/yyyy as ISO since
    the first version). Parsed here rather than cast in SQL: a text that looks like a date but
    is not one (2026-02-30) must be skipped, not abort the migration."""
    conn = op.get_bind()
    recipient = sa.table(
        "recipient", sa.column("id", sa.BigInteger()), sa.column("attributes", sa.JSON())
    )
    target = sa.table(
        "recipient_date",
        sa.column("recipient_id", sa.BigInteger()),
        sa.column("attribute", sa.String()),
        sa.column("value", sa.Date()),
    )
    rows: list[dict[str, Any]] = []
    # The option on the statement, not the connection: on the connection it would stay set for
    # every statement alembic runs after this one.
    result = conn.execute(
        sa.select(recipient.c.id, recipient.c.attributes).execution_options(yield_per=_BATCH)
    )
    for recipient_id, attributes in result:
        for key, value in (attributes or {}).items():
            if isinstance(value, str) and _ISO_DATE.fullmatch(value) and len(key) <= 200:
                try:
                    parsed = date.fromisoformat(value)
                except ValueError:
                    continue
                rows.append({"recipient_id": recipient_id, "attribute": key, "value": parsed})
        if len(rows) >= _BATCH:
            conn.execute(sa.insert(target), rows)
            rows = []
    if rows:
        conn.execute(sa.insert(target), rows)


def downgrade() -> None:
    with op.batch_alter_table("wave", schema=None) as batch_op:
        batch_op.drop_constraint("fk_wave_parent_id_wave", type_="foreignkey")
        batch_op.drop_constraint("uq_wave_parent_occurrence", type_="unique")
        batch_op.drop_index("ix_wave_parent_id")
        batch_op.drop_column("covered_through")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("occurrence")
        batch_op.drop_column("parent_id")
        batch_op.drop_column("kind")

    with op.batch_alter_table("recipient_date", schema=None) as batch_op:
        batch_op.drop_index("ix_recipient_date_value")
    op.drop_table("recipient_date")
