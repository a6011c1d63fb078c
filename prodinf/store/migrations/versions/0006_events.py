"""events: what happened to a dataset, append-only, each handled by a job

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 02:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

import prodinf.store.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_KEY = sa.String(length=200).with_variant(
    mysql.VARCHAR(length=200, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)


def upgrade() -> None:
    op.create_table(
        "prodinf_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=True),
        sa.Column("attributes", _JSON, nullable=True),
        sa.Column("payload", _JSON, nullable=False),
        sa.Column("source", sa.String(length=200), nullable=True),
        sa.Column("idempotency_key", _KEY, nullable=True),
        sa.Column("created_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_prodinf_events"),
        sa.UniqueConstraint("idempotency_key", name="uq_prodinf_events_idempotency_key"),
    )
    op.create_index("ix_prodinf_events_type", "prodinf_events", ["type"])
    op.create_index("ix_prodinf_events_dataset", "prodinf_events", ["dataset"])
    op.create_index("ix_prodinf_events_created_at", "prodinf_events", ["created_at"])


def downgrade() -> None:
    op.drop_table("prodinf_events")
