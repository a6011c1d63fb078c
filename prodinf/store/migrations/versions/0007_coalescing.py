"""coalescing: the open window of each subscription and key

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 04:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import prodinf.store.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prodinf_coalescing",
        sa.Column("slot", sa.String(length=64), nullable=False),
        sa.Column("subscription", sa.String(length=60), nullable=False),
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("closes_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("slot", name="pk_prodinf_coalescing"),
    )


def downgrade() -> None:
    op.drop_table("prodinf_coalescing")
