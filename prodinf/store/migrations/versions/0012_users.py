"""users and API tokens: who may use the portal and the API, and with what role

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import prodinf.store.types

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prodinf_users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prodinf_users"),
        sa.UniqueConstraint("name", name="uq_prodinf_users_name"),
    )
    op.create_table(
        "prodinf_tokens",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("created_at", prodinf.store.types.UTCDateTime(), nullable=False),
        sa.Column("expires_at", prodinf.store.types.UTCDateTime(), nullable=True),
        sa.Column("revoked_at", prodinf.store.types.UTCDateTime(), nullable=True),
        sa.Column("last_used_at", prodinf.store.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["prodinf_users.id"],
            name="fk_prodinf_tokens_user_id_prodinf_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_prodinf_tokens"),
    )
    op.create_index("ix_prodinf_tokens_user_id", "prodinf_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_prodinf_tokens_user_id", table_name="prodinf_tokens")
    op.drop_table("prodinf_tokens")
    op.drop_table("prodinf_users")
