"""The durable job store (SQLAlchemy 2, Alembic migrations)."""

from prodinf.store.datasets import DATASET_TABLES
from prodinf.store.migrate import upgrade
from prodinf.store.models import Base, HistoryRow, JobRow, StepRow, WatcherRow, WatchRow
from prodinf.store.repository import TERMINAL, JobStore, add_history, job_detail, job_summary

__all__ = [
    "DATASET_TABLES",
    "TERMINAL",
    "Base",
    "HistoryRow",
    "JobRow",
    "JobStore",
    "StepRow",
    "WatchRow",
    "WatcherRow",
    "add_history",
    "job_detail",
    "job_summary",
    "upgrade",
]
