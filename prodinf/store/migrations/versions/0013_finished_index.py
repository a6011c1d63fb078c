"""jobs by status and end: the latest failures and the last hour's ends, read by index

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 12:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_prodinf_jobs_status_finished_at", "prodinf_jobs", ["status", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_prodinf_jobs_status_finished_at", table_name="prodinf_jobs")
