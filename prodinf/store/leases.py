"""A step held under a lease: renewing it, and what its holder may write while it runs.

Every write here touches a step only while ``owner`` still holds it, so a worker
whose lease ran out (and passed to another) changes nothing. The job row is
locked before the step, the order every writer takes them in.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from prodinf.status import StepStatus
from prodinf.store.models import JOBS, STEPS
from prodinf.store.repository import JobStore
from prodinf.store.types import utcnow

__all__ = ["cancel_requested", "holds", "renew", "save_state", "show_progress"]


def renew(store: JobStore, job_id: str, step: str, owner: str, until: datetime) -> None:
    """Extend ``owner``'s lease on ``step`` of ``job_id`` to ``until``, and move the job's
    ``next_run_at`` (when the reconciler looks at it) with it."""
    with store.transaction() as conn:
        job = conn.execute(
            select(JOBS.c.next_run_at).where(JOBS.c.id == job_id).with_for_update()
        ).first()
        if job is None:
            return
        renewed = conn.execute(
            update(STEPS)
            .where(STEPS.c.job_id == job_id, STEPS.c.name == step, STEPS.c.lease_owner == owner)
            .values(lease_until=until)
        ).rowcount
        if not renewed:
            return
        due = conn.scalar(
            select(func.min(STEPS.c.due_at)).where(
                STEPS.c.job_id == job_id, STEPS.c.status == StepStatus.WAITING
            )
        )
        # Not past a wait in another branch; but a wait already due keeps the
        # later time the reconciler set when it published the job for it.
        if due is not None:
            until = min(until, max(due, job.next_run_at or due))
        conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(next_run_at=until))


def holds(conn: Connection, job_id: str, step: str, owner: str) -> bool:
    """True while ``owner`` holds the lease on ``step`` of ``job_id``."""
    held = conn.scalar(
        select(STEPS.c.id).where(
            STEPS.c.job_id == job_id, STEPS.c.name == step, STEPS.c.lease_owner == owner
        )
    )
    return held is not None


def save_state(store: JobStore, job_id: str, step: str, owner: str, state: dict[str, Any]) -> None:
    """Store ``state`` (JSON) as the step's state, if ``owner`` still holds it."""
    with store.transaction() as conn:
        conn.execute(
            update(STEPS)
            .where(STEPS.c.job_id == job_id, STEPS.c.name == step, STEPS.c.lease_owner == owner)
            .values(state=json.loads(json.dumps(state)))
        )


def show_progress(store: JobStore, job_id: str, step: str, owner: str, message: str) -> None:
    """Show ``message`` (already masked and cut) as the job's progress, if ``owner``
    still holds ``step``: what a worker that lost its lease shows is not the job's."""
    with store.transaction() as conn:
        job = conn.scalar(select(JOBS.c.id).where(JOBS.c.id == job_id).with_for_update())
        if job is None or not holds(conn, job_id, step, owner):
            return
        conn.execute(
            update(JOBS)
            .where(JOBS.c.id == job_id)
            .values(progress_message=message, updated_at=utcnow())
        )


def cancel_requested(store: JobStore, job_id: str) -> bool:
    """True once someone asked to cancel the job."""
    with store.transaction() as conn:
        return bool(conn.scalar(select(JOBS.c.cancel_requested).where(JOBS.c.id == job_id)))
