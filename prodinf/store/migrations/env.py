"""Alembic environment: the engine is handed in by ``prodinf.store.migrate``."""

from __future__ import annotations

from alembic import context

from prodinf.store import datasets  # noqa: F401  (its tables are on Base.metadata)
from prodinf.store.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table="prodinf_alembic_version",
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
