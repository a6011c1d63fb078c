"""exact idempotency keys

MySQL/MariaDB compare strings under the table's collation (``utf8mb4_general_ci``
by default): "KEY-a", "key-a" and "kéy-a" would be one idempotency key there and
three everywhere else. ``utf8mb4_bin`` compares them byte for byte. SQLite and
PostgreSQL already do: nothing to change on them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:12:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _is_mysql() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def upgrade() -> None:
    if not _is_mysql():
        return
    op.alter_column(
        "prodinf_jobs",
        "idempotency_key",
        existing_type=sa.String(length=200),
        type_=mysql.VARCHAR(length=200, charset="utf8mb4", collation="utf8mb4_bin"),
        existing_nullable=True,
    )


def downgrade() -> None:
    if not _is_mysql():
        return
    # Back to the table's default collation; fails if two keys now differ only by
    # case or accent, which the old collation cannot tell apart.
    op.alter_column(
        "prodinf_jobs",
        "idempotency_key",
        existing_type=mysql.VARCHAR(length=200, charset="utf8mb4", collation="utf8mb4_bin"),
        type_=sa.String(length=200),
        existing_nullable=True,
    )
