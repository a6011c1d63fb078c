"""The jobs that failed last, with their error: what ``prodinf status`` (and a
dashboard) lists under the latest failures."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from prodinf.redact import redact_text
from prodinf.status import JobStatus
from prodinf.store.models import JobRow
from prodinf.store.repository import JobStore

__all__ = ["latest_failures"]


def latest_failures(store: JobStore, limit: int = 10) -> list[dict[str, Any]]:
    """The ``limit`` jobs that failed last, newest first: ``id``, ``kind``, ``queue``,
    ``finished_at`` and the failed ``step`` with its ``error`` message (masked)."""
    with store.session() as session:
        rows = session.execute(
            select(JobRow.id, JobRow.kind, JobRow.queue, JobRow.finished_at, JobRow.error)
            .where(JobRow.status == JobStatus.FAILED)
            .order_by(JobRow.finished_at.desc(), JobRow.id)
            .limit(limit)
        ).all()
    failures = []
    for job_id, kind, queue, finished_at, error in rows:
        error = error if isinstance(error, dict) else {}
        failures.append(
            {
                "id": job_id,
                "kind": kind,
                "queue": queue,
                "finished_at": finished_at,
                "step": error.get("step"),
                "error": redact_text(str(error.get("message") or error.get("type") or "")),
            }
        )
    return failures
