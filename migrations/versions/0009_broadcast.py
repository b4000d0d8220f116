"""broadcast items, their communes, and reported plays (loudspeaker waves)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "broadcast_item",
        sa.Column("id", _BIG, nullable=False),
        sa.Column("wave_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("local_date", sa.Date(), nullable=False),
        sa.Column("slot", sa.String(length=8), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.Column("audio_sha256", sa.String(length=64), nullable=False),
        sa.Column("ranked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["audio_sha256"], ["audio_asset.sha256"]),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"]),
        sa.ForeignKeyConstraint(["wave_id"], ["wave.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("wave_id", "local_date", "slot", name="uq_broadcast_item_wave_slot"),
    )
    op.create_index("ix_broadcast_item_date", "broadcast_item", ["local_date", "id"])
    op.create_table(
        "broadcast_target",
        sa.Column("item_id", _BIG, nullable=False),
        sa.Column("commune_code", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("item_id", "commune_code"),
    )
    op.create_index(
        "ix_broadcast_target_commune", "broadcast_target", ["commune_code", "item_id"]
    )
    op.create_table(
        "broadcast_play",
        sa.Column("id", _BIG, nullable=False),
        sa.Column("item_id", _BIG, nullable=False),
        sa.Column("wave_id", sa.Integer(), nullable=False),
        sa.Column("commune_code", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("reported_by", sa.String(length=100), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "item_id", "commune_code", "started_at", name="uq_broadcast_play_item_commune_start"
        ),
    )
    op.create_index(
        "ix_broadcast_play_commune_time", "broadcast_play", ["commune_code", "started_at"]
    )
    op.create_index("ix_broadcast_play_time", "broadcast_play", ["started_at"])


def downgrade() -> None:
    op.drop_table("broadcast_play")
    op.drop_table("broadcast_target")
    op.drop_table("broadcast_item")
