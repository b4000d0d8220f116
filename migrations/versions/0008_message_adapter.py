"""outbox.adapter and delivery_event.adapter: which adapter carried each message

A channel may be carried by an ordered failover list of adapters (channels/failover.py); the
adapter of each attempt is recorded before the send, so that reconciliation and delivery reports
deal with the provider that may have the message, and statistics can say who carried what.
Nullable, without a default: adding the columns rewrites neither table on PostgreSQL.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("outbox", "delivery_event"):
        op.add_column(
            table,
            sa.Column("adapter", sa.String(length=64), nullable=True),
        )


def downgrade() -> None:
    for table in ("delivery_event", "outbox"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("adapter")
