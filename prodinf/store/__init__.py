"""The durable job store (SQLAlchemy 2, Alembic migrations): every read and write of it.

The engine decides what happens to a job; these modules read and write it:
``repository`` (connections and the queries pages read), ``rows`` (a job's rows
locked in a transaction, new jobs), ``submissions``, ``leases``, ``due`` (what the
reconciler claims), ``watches`` (shared URL watches) and ``steplogs`` (what steps
logged).
"""

from prodinf.store.datasets import DATASET_TABLES
from prodinf.store.migrate import upgrade
from prodinf.store.models import Base, HistoryRow, JobRow, StepRow, WatcherRow, WatchRow
from prodinf.store.repository import JobStore, job_detail, job_summary
from prodinf.store.steplogs import STEP_LOGS

__all__ = [
    "DATASET_TABLES",
    "STEP_LOGS",
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
