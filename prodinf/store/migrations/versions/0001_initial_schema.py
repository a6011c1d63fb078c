"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 09:21:06.647334
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import prodinf.store.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prodinf_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column(
            "params",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "error",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("progress_done", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        sa.Column("progress_message", sa.String(length=500), nullable=True),
        sa.Column("submitted_by", sa.String(length=200), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column(
            "notify",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.Column("started_at", prodinf.store.types.UTCDateTime(), nullable=True),
        sa.Column("finished_at", prodinf.store.types.UTCDateTime(), nullable=True),
        sa.Column("next_run_at", prodinf.store.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prodinf_jobs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_prodinf_jobs_idempotency_key")),
    )
    with op.batch_alter_table("prodinf_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_prodinf_jobs_created_at", ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_prodinf_jobs_kind"), ["kind"], unique=False)
        batch_op.create_index(
            "ix_prodinf_jobs_status_next_run_at", ["status", "next_run_at"], unique=False
        )

    op.create_table(
        "prodinf_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.Column("event", sa.String(length=50), nullable=False),
        sa.Column("step", sa.String(length=100), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["prodinf_jobs.id"],
            name=op.f("fk_prodinf_history_job_id_prodinf_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prodinf_history")),
    )
    with op.batch_alter_table("prodinf_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prodinf_history_job_id"), ["job_id"], unique=False)

    op.create_table(
        "prodinf_steps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column(
            "after",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "output",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "error",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "state",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("due_at", prodinf.store.types.UTCDateTime(), nullable=True),
        sa.Column("wait_reason", sa.String(length=500), nullable=True),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_until", prodinf.store.types.UTCDateTime(), nullable=True),
        sa.Column("first_attempt_at", prodinf.store.types.UTCDateTime(), nullable=True),
        sa.Column("started_at", prodinf.store.types.UTCDateTime(), nullable=True),
        sa.Column("finished_at", prodinf.store.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["prodinf_jobs.id"],
            name=op.f("fk_prodinf_steps_job_id_prodinf_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prodinf_steps")),
        sa.UniqueConstraint("job_id", "name", name="uq_prodinf_steps_job_id_name"),
    )
    with op.batch_alter_table("prodinf_steps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prodinf_steps_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("prodinf_steps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prodinf_steps_job_id"))

    op.drop_table("prodinf_steps")
    with op.batch_alter_table("prodinf_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prodinf_history_job_id"))

    op.drop_table("prodinf_history")
    with op.batch_alter_table("prodinf_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_prodinf_jobs_status_next_run_at")
        batch_op.drop_index(batch_op.f("ix_prodinf_jobs_kind"))
        batch_op.drop_index("ix_prodinf_jobs_created_at")

    op.drop_table("prodinf_jobs")
