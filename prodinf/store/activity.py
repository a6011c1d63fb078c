"""What a dashboard shows of the jobs: how many ended in each slot of the last hour, by
outcome, and the steps running now (with the worker that holds each)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from prodinf.status import TERMINAL, JobStatus, StepStatus
from prodinf.store.models import JOBS, STEPS
from prodinf.store.repository import JobStore

__all__ = ["Slot", "ended_by_slot", "running_steps"]


@dataclass(frozen=True)
class Slot:
    """The jobs that ended in ``[start, start + width)``, by final status."""

    start: datetime
    ended: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.ended.values())


def ended_by_slot(store: JobStore, now: datetime, *, span: timedelta, slots: int) -> list[Slot]:
    """The jobs that ended in the last ``span``, in ``slots`` slots, oldest first: one
    range read per final status (index ``ix_prodinf_jobs_status_finished_at``)."""
    since = now - span
    width = span / slots
    found = [Slot(since + width * i, {}) for i in range(slots)]
    with store.reading() as session:
        for status in sorted(TERMINAL):
            ends = session.scalars(
                select(JOBS.c.finished_at).where(
                    JOBS.c.status == status, JOBS.c.finished_at >= since
                )
            )
            for end in ends:
                index = min(slots - 1, int((end - since) / width))
                slot = found[index].ended
                slot[status] = slot.get(status, 0) + 1
    return found


def running_steps(store: JobStore, limit: int = 50) -> list[dict[str, Any]]:
    """The steps running now (of jobs running), oldest start first: job id, kind, queue,
    step, since when, and the worker holding it (``host:pid``)."""
    with store.reading() as session:
        rows = session.execute(
            select(
                JOBS.c.id,
                JOBS.c.kind,
                JOBS.c.queue,
                STEPS.c.name,
                STEPS.c.started_at,
                STEPS.c.lease_owner,
            )
            .join(STEPS, STEPS.c.job_id == JOBS.c.id)
            .where(JOBS.c.status == JobStatus.RUNNING, STEPS.c.status == StepStatus.RUNNING)
            .order_by(STEPS.c.started_at)
            .limit(limit)
        ).all()
    return [
        {
            "id": row.id,
            "kind": row.kind,
            "queue": row.queue,
            "step": row.name,
            "started_at": row.started_at,
            "worker": ":".join((row.lease_owner or "").split(":")[:2]) or None,
        }
        for row in rows
    ]
