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

__all__ = ["new_job"]


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
