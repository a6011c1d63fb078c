"""jobs listed a page at a time from an index: by creation, by kind or status and
creation, by update (each with the id, the tie-break of a page's cursor)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 14:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TABLE = "prodinf_jobs"


def upgrade() -> None:
    op.drop_index("ix_prodinf_jobs_created_at", table_name=TABLE)
    op.drop_index("ix_prodinf_jobs_kind", table_name=TABLE)
    op.create_index("ix_prodinf_jobs_created_at", TABLE, ["created_at", "id"])
    op.create_index("ix_prodinf_jobs_kind_created_at", TABLE, ["kind", "created_at", "id"])
    op.create_index("ix_prodinf_jobs_status_created_at", TABLE, ["status", "created_at", "id"])
    op.create_index("ix_prodinf_jobs_updated_at", TABLE, ["updated_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_prodinf_jobs_updated_at", table_name=TABLE)
    op.drop_index("ix_prodinf_jobs_status_created_at", table_name=TABLE)
    op.drop_index("ix_prodinf_jobs_kind_created_at", table_name=TABLE)
    op.drop_index("ix_prodinf_jobs_created_at", table_name=TABLE)
    op.create_index("ix_prodinf_jobs_kind", TABLE, ["kind"])
    op.create_index("ix_prodinf_jobs_created_at", TABLE, ["created_at"])
