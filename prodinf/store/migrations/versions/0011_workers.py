"""workers: the workers that use the store, and when each was last seen

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import prodinf.store.types

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prodinf_workers",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("queues", prodinf.store.types.JSONType, nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.Column("seen_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_prodinf_workers"),
    )


def downgrade() -> None:
    op.drop_table("prodinf_workers")
