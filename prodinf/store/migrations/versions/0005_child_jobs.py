"""child jobs: a job started by a step of another, which it wakes when it ends

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 02:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prodinf_jobs") as batch:
        batch.add_column(sa.Column("parent_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("parent_step", sa.String(length=100), nullable=True))
        batch.create_index("ix_prodinf_jobs_parent_id", ["parent_id", "parent_step"])


def downgrade() -> None:
    with op.batch_alter_table("prodinf_jobs") as batch:
        batch.drop_index("ix_prodinf_jobs_parent_id")
        batch.drop_column("parent_step")
        batch.drop_column("parent_id")
