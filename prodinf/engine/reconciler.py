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

from prodinf.engine.runner import Publish
from prodinf.exceptions import ProdinfError
from prodinf.store import JobStore
from prodinf.store.due import claim_due
from prodinf.store.types import utcnow

__all__ = ["reconcile"]

log = logging.getLogger(__name__)


def reconcile(
    store: JobStore,
    publish: Publish,
    *,
    redrive_after: float,
    queues: Collection[str] | None = None,
    limit: int = 1000,
) -> int:
    """Publish the jobs that are due (on ``queues``, or all); return how many."""
    later = utcnow() + timedelta(seconds=redrive_after)
    claimed = claim_due(store, until=later, queues=queues, limit=limit)
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
