"""The durable job store (SQLAlchemy 2, Alembic migrations): every read and write of it.

The engine decides what happens to a job; these modules read and write it:
``repository`` (connections and the queries pages read), ``rows`` (a job's rows
locked in a transaction, new jobs), ``submissions``, ``leases``, ``due`` (what the
reconciler claims) and ``watches`` (shared URL watches).
"""

from prodinf.store.datasets import DATASET_TABLES
from prodinf.store.migrate import upgrade
from prodinf.store.models import Base, HistoryRow, JobRow, StepRow, WatcherRow, WatchRow
from prodinf.store.repository import JobStore, job_detail, job_summary

__all__ = [
    "DATASET_TABLES",
    "Base",
    "HistoryRow",
    "JobRow",
    "JobStore",
    "StepRow",
    "WatchRow",
    "WatcherRow",
    "job_detail",
    "job_summary",
    "upgrade",
]
