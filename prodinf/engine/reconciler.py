"""The reconciler: publishes a message for every job that is due and has none.

A job is due when its ``next_run_at`` has passed: a wait has come due, a
step's lease ran out (its worker died), or a queued job's message has sat
unconsumed for ``redrive_after`` seconds (it may be lost). Each due job is
claimed by moving its ``next_run_at`` forward in a conditional update, so
several reconcilers (beat, or one inside each worker) never publish the same
job twice in one pass.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import timedelta

from sqlalchemy import select, update

from prodinf.engine.runner import Publish
from prodinf.exceptions import ProdinfError
from prodinf.store import JobRow, JobStore
from prodinf.store.types import utcnow

__all__ = ["reconcile"]

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running", "waiting")


def reconcile(
    store: JobStore,
    publish: Publish,
    *,
    redrive_after: float,
    queues: Collection[str] | None = None,
    limit: int = 1000,
) -> int:
    """Publish the jobs that are due (on ``queues``, or all); return how many."""
    now = utcnow()
    query = (
        select(JobRow.id, JobRow.queue, JobRow.next_run_at)
        .where(JobRow.status.in_(ACTIVE), JobRow.next_run_at <= now)
        .order_by(JobRow.next_run_at)
        .limit(limit)
    )
    if queues is not None:
        query = query.where(JobRow.queue.in_(list(queues)))
    later = now + timedelta(seconds=redrive_after)
    claimed: list[tuple[str, str]] = []
    with store.session() as session:
        for job_id, queue, due in session.execute(query).all():
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.next_run_at == due)
                .values(next_run_at=later)
            )
            if result.rowcount:  # type: ignore[attr-defined]
                claimed.append((job_id, queue))
    published = 0
    for job_id, queue in claimed:
        try:
            publish(job_id, queue)
            published += 1
        except ProdinfError as exc:  # it stays due after redrive_after; try then
            log.warning("reconciler could not publish job %s: %s", job_id, exc)
    if published:
        log.info("reconciler published %d due job(s)", published)
    return published
