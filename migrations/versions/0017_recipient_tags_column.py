"""recipient.tags: the tags as a column (text[] with a GIN index on PostgreSQL, a JSON array on
SQLite) instead of rows of recipient_tag

A tag row cost two B-tree entries (the primary key and ix_recipient_tag_tag) and, in a re-import,
a probe for every tag of every row: a third of the server's time of an import of a million
recipients (docs/benchmarks.md, recipient import). A GIN index keeps "tag X" an indexed lookup
on PostgreSQL; its pending list (fastupdate, on by default) takes an import's new entries in bulk.
SQLite has no index that looks inside a JSON array: its tag filters read the rows, which suits
the embedded database's lists (tens of thousands).

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.add_column(
            "recipient",
            sa.Column("tags", ARRAY(sa.Text()), nullable=False, server_default=sa.text("'{}'")),
        )
        op.execute(
            """UPDATE recipient AS r SET tags = t.tags
               FROM (SELECT recipient_id, array_agg(tag ORDER BY tag) AS tags
                     FROM recipient_tag GROUP BY recipient_id) AS t
               WHERE r.id = t.recipient_id"""
        )
        op.create_index("ix_recipient_tags", "recipient", ["tags"], postgresql_using="gin")
    else:
        op.add_column(
            "recipient",
            sa.Column("tags", sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
        )
        op.execute(
            """UPDATE recipient SET tags = (
                   SELECT json_group_array(tag) FROM (
                       SELECT tag FROM recipient_tag WHERE recipient_id = recipient.id
                       ORDER BY tag))
               WHERE id IN (SELECT recipient_id FROM recipient_tag)"""
        )
    with op.batch_alter_table("recipient_tag", schema=None) as batch_op:
        batch_op.drop_index("ix_recipient_tag_tag")
    op.drop_table("recipient_tag")


def downgrade() -> None:
    op.create_table(
        "recipient_tag",
        sa.Column("recipient_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite")),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("recipient_id", "tag"),
    )
    with op.batch_alter_table("recipient_tag", schema=None) as batch_op:
        batch_op.create_index("ix_recipient_tag_tag", ["tag", "recipient_id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "INSERT INTO recipient_tag (recipient_id, tag) "
            "SELECT id, unnest(tags) FROM recipient"
        )
        op.drop_index("ix_recipient_tags", table_name="recipient")
    else:
        op.execute(
            "INSERT INTO recipient_tag (recipient_id, tag) "
            "SELECT recipient.id, t.value FROM recipient, json_each(recipient.tags) AS t"
        )
    with op.batch_alter_table("recipient", schema=None) as batch_op:
        batch_op.drop_column("tags")
