"""The rows of a new job: what a submission writes, and what a finishing job writes for
the notification it asks for (in the same transaction, so neither can be lost)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from prodinf.config import Settings
from prodinf.engine.registry import Kind
from prodinf.engine.steps import Flow
from prodinf.status import JobStatus, StepStatus
from prodinf.store.rows import NewRows, history_entry

__all__ = ["done_already", "new_job", "waiting_on"]


def new_job(
    kind: Kind[Any],
    params: dict[str, Any],
    flow: Flow,
    settings: Settings,
    now: datetime,
    *,
    idempotency_key: str | None = None,
    submitted_by: str | None = None,
    notify: dict[str, Any] | None = None,
    parent: tuple[str, str] | None = None,
    queue: str | None = None,
) -> NewRows:
    """The rows of a queued ``kind`` job with validated, JSON-ready ``params``.

    Its ``next_run_at`` is ``resend_after`` from now: unless its message is
    confirmed sent before (``Messages.send``), the reconciler sends it then.
    ``parent`` (job id, step) makes it a child job, whose end wakes that step.
    ``queue`` runs it on another queue than its kind's.
    """
    job_id = str(uuid.uuid4())
    values: dict[str, Any] = {
        "id": job_id,
        "kind": kind.name,
        "queue": settings.queue_for(queue or kind.queue),
        "status": JobStatus.QUEUED,
        "params": params,
        "progress_done": 0,
        "progress_total": len(flow.steps),
        "progress_message": JobStatus.QUEUED,
        "submitted_by": submitted_by,
        "idempotency_key": idempotency_key,
        "notify": notify,
        "cancel_requested": False,
        "created_at": now,
        "updated_at": now,
        "next_run_at": now + timedelta(seconds=settings.resend_after),
        "parent_id": parent[0] if parent else None,
        "parent_step": parent[1] if parent else None,
    }
    steps = [
        {
            "job_id": job_id,
            "name": step.name,
            "position": position,
            "after": list(flow.deps[step.name]),
            "status": StepStatus.PENDING,
            "attempts": 0,
            "state": {},
        }
        for position, step in enumerate(flow.steps)
    ]
    submitted = f"submitted {kind.name}" + (f" by {submitted_by}" if submitted_by else "")
    return NewRows(values, steps, history_entry(job_id, "job.submitted", None, submitted))


def waiting_on(
    job: NewRows,
    children: dict[str, NewRows],
    *,
    reason: str,
    until: datetime,
    state: dict[str, Any],
) -> None:
    """Make the new ``job``'s first step start out waiting for ``children`` (by name),
    inserted with it: what that step's first run would do (``ctx.start``), done as the
    job is submitted. Its message is then not needed: the children's ends wake it, or
    ``until`` comes. The children must have been made with ``parent=(job, step)``."""
    step = job.steps[0]
    for row in job.steps:
        row.setdefault("due_at", None)
        row.setdefault("wait_reason", None)
    step.update(status=StepStatus.WAITING, due_at=until, wait_reason=reason, state=state)
    job.values.update(status=JobStatus.WAITING, next_run_at=until, progress_message=reason)
    job.more_history.extend(
        history_entry(
            job.id,
            "child.started",
            step["name"],
            f"started {child.values['kind']} job {child.id} as {name}",
        )
        for name, child in children.items()
    )
    job.more_history.append(history_entry(job.id, "step.waiting", step["name"], reason))


def done_already(job: NewRows, output: Any, now: datetime) -> None:
    """Make the new one-step ``job`` start out succeeded with ``output`` (its result):
    for a job whose step, run, would find nothing to do (an event nobody subscribes
    to). It needs no message and no worker."""
    (step,) = job.steps
    step.update(status=StepStatus.SUCCEEDED, output=output, started_at=now, finished_at=now)
    job.values.update(
        status=JobStatus.SUCCEEDED,
        result=output,
        progress_done=1,
        progress_message=str(JobStatus.SUCCEEDED),
        started_at=now,
        finished_at=now,
        next_run_at=None,
    )
    job.more_history.append(
        history_entry(job.id, "step.succeeded", step["name"], f"{step['name']} succeeded")
    )
    job.more_history.append(history_entry(job.id, "job.succeeded", None, str(JobStatus.SUCCEEDED)))
