"""handovers: each handover's facts, the unfinished one of each database, bulks, and
the copy slots of each staging server

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 07:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import prodinf.store.types

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "prodinf_handovers",
        sa.Column("token", sa.String(length=36), nullable=False),
        sa.Column("source_key", sa.String(length=64), nullable=False),
        sa.Column("server", sa.String(length=300), nullable=False),
        sa.Column("database", sa.String(length=200), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column("release", sa.Integer(), nullable=False),
        sa.Column("staging", sa.String(length=300), nullable=False),
        sa.Column("staging_key", sa.String(length=64), nullable=False),
        sa.Column("contact", sa.String(length=320), nullable=False),
        sa.Column("bulk_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.Column("copy_state", sa.String(length=10), nullable=True),
        sa.Column("copy_asked_at", prodinf.store.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("token", name="pk_prodinf_handovers"),
    )
    for column in ("source_key", "database", "type", "release", "staging_key", "contact"):
        op.create_index(f"ix_prodinf_handovers_{column}", "prodinf_handovers", [column])
    op.create_index("ix_prodinf_handovers_bulk_id", "prodinf_handovers", ["bulk_id"])
    op.create_index("ix_prodinf_handovers_created_at", "prodinf_handovers", ["created_at"])
    op.create_table(
        "prodinf_handover_open",
        sa.Column("source_key", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("source_key", name="pk_prodinf_handover_open"),
    )
    op.create_table(
        "prodinf_handover_bulks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("server", sa.String(length=300), nullable=False),
        sa.Column("contact", sa.String(length=320), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("answers", _JSON, nullable=False),
        sa.Column("created_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prodinf_handover_bulks"),
    )
    op.create_index(
        "ix_prodinf_handover_bulks_created_at", "prodinf_handover_bulks", ["created_at"]
    )
    op.create_table(
        "prodinf_copy_slots",
        sa.Column("staging_key", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("staging_key", name="pk_prodinf_copy_slots"),
    )


def downgrade() -> None:
    for table in (
        "prodinf_copy_slots",
        "prodinf_handover_bulks",
        "prodinf_handover_open",
        "prodinf_handovers",
    ):
        op.drop_table(table)
