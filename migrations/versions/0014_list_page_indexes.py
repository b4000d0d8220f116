"""Indexes for the suppression list's and the consents' keyset pages, newest first

Revision ID: 0014
Revises: 0010
Create Date: 2026-12-10 10:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Without them every page of a do-not-contact list of millions sorts the whole table.
    op.create_index("ix_suppression_created", "suppression", ["created_at", "phone"])
    op.create_index("ix_consent_given", "consent", ["given_at", "phone"])


def downgrade() -> None:
    op.drop_index("ix_consent_given", table_name="consent")
    op.drop_index("ix_suppression_created", table_name="suppression")
