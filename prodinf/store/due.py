"""Jobs that are due: what the reconciler claims to publish again.

A job is due when its ``next_run_at`` has passed: a wait has come due, a step's
lease ran out, or a queued job's message has sat unconsumed for a while. Each is
claimed by moving ``next_run_at`` forward in a conditional update, so several
reconcilers never claim the same job in one pass.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select, update

from prodinf.status import ACTIVE
from prodinf.store.models import JOBS
from prodinf.store.repository import JobStore
from prodinf.store.types import utcnow

__all__ = ["claim_due"]


def claim_due(
    store: JobStore,
    *,
    until: datetime,
    queues: Collection[str] | None = None,
    limit: int = 1000,
) -> list[tuple[str, str]]:
    """Claim the due jobs (on ``queues``, or all), moving each one's ``next_run_at`` to
    ``until``; return (job id, queue) of each, earliest due first."""
    query = (
        select(JOBS.c.id, JOBS.c.queue, JOBS.c.next_run_at)
        .where(JOBS.c.status.in_(sorted(ACTIVE)), JOBS.c.next_run_at <= utcnow())
        .order_by(JOBS.c.next_run_at)
        .limit(limit)
    )
    if queues is not None:
        query = query.where(JOBS.c.queue.in_(list(queues)))
    claimed: list[tuple[str, str]] = []
    with store.transaction() as conn:
        for job_id, queue, due in conn.execute(query).all():
            taken = conn.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.next_run_at == due)
                .values(next_run_at=until)
            )
            if taken.rowcount:
                claimed.append((job_id, queue))
    return claimed
