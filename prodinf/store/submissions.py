"""Writing a new job and finding one by its idempotency key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from prodinf.store.models import JobRow
from prodinf.store.repository import JobStore, job_summary
from prodinf.store.rows import NewRows

__all__ = ["Keyed", "delete_job", "find_by_key", "insert_job"]


def insert_job(store: JobStore, new: NewRows) -> None:
    """Insert a new job's rows in a transaction of their own (on PostgreSQL one
    statement, committed on its own: ``JobStore.single``).

    ``IntegrityError`` passes through when its idempotency key is taken.
    """
    with store.single() as conn:
        new.insert(conn)


@dataclass(frozen=True)
class Keyed:
    """The job an idempotency key was used for: what a replay answers and re-sends."""

    kind: str
    queue: str
    next_run_at: datetime | None
    summary: dict[str, Any]


def find_by_key(store: JobStore, key: str) -> Keyed | None:
    """The job submitted with idempotency key ``key``, if any."""
    with store.session() as session:
        job = session.scalars(select(JobRow).where(JobRow.idempotency_key == key)).first()
        if job is None:
            return None
        return Keyed(job.kind, job.queue, job.next_run_at, job_summary(job))


def delete_job(store: JobStore, job_id: str) -> None:
    """Remove a job whose message could not be sent (its steps and history go with it)."""
    with store.session() as session:
        session.execute(delete(JobRow).where(JobRow.id == job_id))
