"""url watches

``prodinf_watches`` holds each URL that waiting steps watch, looked at once per
interval however many steps wait on it; ``prodinf_watchers`` the steps to wake.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 14:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import prodinf.store.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prodinf_watches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("url_key", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("interval", sa.Float(), nullable=False),
        sa.Column("next_look_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=200), nullable=True),
        sa.Column("created_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prodinf_watches")),
        sa.UniqueConstraint("url_key", name=op.f("uq_prodinf_watches_url_key")),
    )
    with op.batch_alter_table("prodinf_watches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_prodinf_watches_next_look_at"), ["next_look_at"], unique=False
        )

    op.create_table(
        "prodinf_watchers",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("step", sa.String(length=100), nullable=False),
        sa.Column("watch_id", sa.Integer(), nullable=False),
        sa.Column("max_errors", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["prodinf_jobs.id"],
            name=op.f("fk_prodinf_watchers_job_id_prodinf_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["watch_id"],
            ["prodinf_watches.id"],
            name=op.f("fk_prodinf_watchers_watch_id_prodinf_watches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "step", name=op.f("pk_prodinf_watchers")),
    )
    with op.batch_alter_table("prodinf_watchers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_prodinf_watchers_watch_id"), ["watch_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("prodinf_watchers")
    op.drop_table("prodinf_watches")
