"""What a scrape of ``/metrics`` reads of the store: the work not yet over.

Only jobs that have not ended are read, through the index on the jobs' status
(``ix_prodinf_jobs_status_next_run_at``) and their steps' index on ``job_id``: a scrape
costs what is queued, running and waiting, however many jobs ended before. Ended
jobs are counted by the engine as they end (``prodinf_jobs_finished_total``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from prodinf.status import ACTIVE, JobStatus, StepStatus
from prodinf.store.models import JOBS, STEPS
from prodinf.store.repository import JobStore

__all__ = ["Unfinished", "unfinished"]

_ACTIVE = sorted(ACTIVE)


@dataclass
class Unfinished:
    """The jobs not yet over, as a scrape reports them."""

    #: (kind, status) -> jobs queued, running or waiting.
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    #: queue -> since when its oldest queued job has been queued.
    oldest_queued: dict[str, datetime] = field(default_factory=dict)
    #: kind -> steps waiting (a timer, a URL, a child job, a remote job, a retry).
    waits: dict[str, int] = field(default_factory=dict)
    #: stage -> handovers at it: their first step that has not succeeded.
    stages: dict[str, int] = field(default_factory=dict)


def unfinished(store: JobStore, *, handover_kind: str) -> Unfinished:
    """The jobs not yet over: by kind and status, the oldest queued on each queue, the
    waiting steps by kind, and the jobs of ``handover_kind`` by stage."""
    found = Unfinished()
    with store.reading() as session:
        by_status = session.execute(
            select(
                JOBS.c.kind,
                JOBS.c.queue,
                JOBS.c.status,
                func.count(),
                func.min(JOBS.c.updated_at),  # a queued job's updated_at: when it was queued
            )
            .where(JOBS.c.status.in_(_ACTIVE))
            .group_by(JOBS.c.kind, JOBS.c.queue, JOBS.c.status)
        ).all()
        waiting = session.execute(
            select(JOBS.c.kind, func.count())
            .select_from(JOBS.join(STEPS, STEPS.c.job_id == JOBS.c.id))
            .where(JOBS.c.status.in_(_ACTIVE), STEPS.c.status == StepStatus.WAITING)
            .group_by(JOBS.c.kind)
        ).all()
        handover_steps = session.execute(
            select(STEPS.c.job_id, STEPS.c.name, STEPS.c.status)
            .select_from(JOBS.join(STEPS, STEPS.c.job_id == JOBS.c.id))
            .where(JOBS.c.status.in_(_ACTIVE), JOBS.c.kind == handover_kind)
            .order_by(STEPS.c.job_id, STEPS.c.position)
        ).all()
    for kind, queue, status, count, since in by_status:
        key = (str(kind), str(status))
        found.jobs[key] = found.jobs.get(key, 0) + int(count)
        if status == JobStatus.QUEUED and since is not None:
            known = found.oldest_queued.get(queue)
            found.oldest_queued[str(queue)] = since if known is None else min(known, since)
    found.waits = {str(kind): int(count) for kind, count in waiting}
    staged: set[str] = set()
    for job_id, name, status in handover_steps:  # in flow order: the first not succeeded
        if job_id in staged or status == StepStatus.SUCCEEDED:
            continue
        staged.add(job_id)
        found.stages[str(name)] = found.stages.get(str(name), 0) + 1
    return found
