"""rate limit: the grants of the last second, kept with each bucket

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing buckets start with an empty window: at most one extra second's worth, once.
    with op.batch_alter_table("rate_bucket", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "grants",
                sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                server_default=sa.text("'[]'"),
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("rate_bucket", schema=None) as batch_op:
        batch_op.drop_column("grants")
