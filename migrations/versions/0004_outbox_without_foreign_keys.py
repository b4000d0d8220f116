"""outbox and delivery_event without foreign keys; the outbox key leads with the recipient;
the claim index leads with the wave

PostgreSQL checks a foreign key row by row with a trigger that also locks the parent row: on the
two high-volume tables that was half the time of expanding a wave. The outbox's unique key now
starts with recipient_id, so it also serves per-recipient lookups and ix_outbox_recipient goes.
The dispatcher claims one wave at a time from ix_outbox_due, now (wave_id, due_at, id): with
(due_at, id) a claim walked past every due message of paused waves, and the planner, its
statistics not yet showing a freshly expanded wave, chose to sort all of the wave's messages.
See loa/models.py (OutboxMessage) for why no reference can dangle.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PLANNED_ONLY = {
    "postgresql_where": sa.text("status = 'planned'"),
    "sqlite_where": sa.text("status = 'planned'"),
}
# SQLite keeps these constraints unnamed: batch mode names them by this convention to drop them.
_SQLITE_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s"}


def _fk(table: str, column: str) -> str:
    if op.get_bind().dialect.name == "sqlite":
        return f"fk_{table}_{column}"
    return f"{table}_{column}_fkey"  # PostgreSQL's default name


def upgrade() -> None:
    # delivery_event first: while it references outbox, SQLite cannot drop and rebuild outbox.
    with op.batch_alter_table("delivery_event", naming_convention=_SQLITE_NAMES) as batch_op:
        batch_op.drop_constraint(_fk("delivery_event", "message_id"), type_="foreignkey")
        batch_op.drop_constraint(_fk("delivery_event", "wave_id"), type_="foreignkey")
    with op.batch_alter_table("outbox", naming_convention=_SQLITE_NAMES) as batch_op:
        batch_op.drop_constraint(_fk("outbox", "recipient_id"), type_="foreignkey")
        batch_op.drop_constraint(_fk("outbox", "wave_id"), type_="foreignkey")
        batch_op.drop_constraint("uq_outbox_wave_recipient_channel", type_="unique")
        batch_op.create_unique_constraint(
            "uq_outbox_recipient_wave_channel", ["recipient_id", "wave_id", "channel"]
        )
        batch_op.drop_index("ix_outbox_recipient")
        batch_op.drop_index("ix_outbox_due")
        batch_op.create_index(
            "ix_outbox_due", ["wave_id", "due_at", "id"], unique=False, **_PLANNED_ONLY
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", naming_convention=_SQLITE_NAMES) as batch_op:
        batch_op.drop_index("ix_outbox_due")
        batch_op.create_index("ix_outbox_due", ["due_at", "id"], unique=False, **_PLANNED_ONLY)
        batch_op.create_index("ix_outbox_recipient", ["recipient_id"], unique=False)
        batch_op.drop_constraint("uq_outbox_recipient_wave_channel", type_="unique")
        batch_op.create_unique_constraint(
            "uq_outbox_wave_recipient_channel", ["wave_id", "recipient_id", "channel"]
        )
        batch_op.create_foreign_key(_fk("outbox", "wave_id"), "wave", ["wave_id"], ["id"])
        batch_op.create_foreign_key(
            _fk("outbox", "recipient_id"), "recipient", ["recipient_id"], ["id"]
        )
    with op.batch_alter_table("delivery_event", naming_convention=_SQLITE_NAMES) as batch_op:
        batch_op.create_foreign_key(_fk("delivery_event", "wave_id"), "wave", ["wave_id"], ["id"])
        batch_op.create_foreign_key(
            _fk("delivery_event", "message_id"), "outbox", ["message_id"], ["id"]
        )
