"""Alembic migrations, run from code: ``prodinf db upgrade`` and ``prodinf up`` call ``upgrade``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from prodinf.store.repository import JobStore

__all__ = ["alembic_config", "upgrade"]

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(store: JobStore) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = store.engine
    return config


def upgrade(store: JobStore, revision: str = "head") -> None:
    """Bring the store's schema up to ``revision`` (idempotent)."""
    command.upgrade(alembic_config(store), revision)
