"""dataset metadata: datasets and their registrations

Tables of the ``register_metadata`` kind (``prodinf/store/registrations.py``)
in the job store, used when ``PRODINF_METADATA_URL`` is unset.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import prodinf.store.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "prodinf_datasets",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("created_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prodinf_datasets"),
        sa.UniqueConstraint("name", "type", name="uq_prodinf_datasets_name"),
    )
    op.create_table(
        "prodinf_dataset_registrations",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("database_uri", sa.String(length=500), nullable=False),
        sa.Column("database_name", sa.String(length=200), nullable=False),
        sa.Column("engine", sa.String(length=20), nullable=False),
        sa.Column("release", sa.Integer(), nullable=True),
        sa.Column("assembly", sa.String(length=100), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("total_rows", sa.BigInteger(), nullable=False),
        sa.Column("tables", _JSON, nullable=False),
        sa.Column("meta", _JSON, nullable=False),
        sa.Column("source", sa.String(length=500), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("events", _JSON, nullable=False),
        sa.Column("registered_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prodinf_dataset_registrations"),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["prodinf_datasets.id"],
            name="fk_prodinf_dataset_registrations_dataset_id_prodinf_datasets",
        ),
        sa.UniqueConstraint("job_id", name="uq_prodinf_dataset_registrations_job_id"),
    )
    op.create_index(
        "ix_prodinf_dataset_registrations_dataset_id",
        "prodinf_dataset_registrations",
        ["dataset_id"],
    )


def downgrade() -> None:
    op.drop_table("prodinf_dataset_registrations")
    op.drop_table("prodinf_datasets")
