"""Every change of a job's or a step's status: one function per transition.

The runner (claiming and recording steps, ending jobs) and the job service
(cancel, retry) both change jobs only through these, on the rows a transaction
holds locked (:class:`prodinf.store.rows.JobRows`); ``JobRows.save`` writes what
changed. Nothing here reads or writes the store itself.

Step transitions are functions; the job's own (:class:`Lifecycle`) also leave
behind the notification a job asked for when it ends, in the same transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from prodinf import metrics
from prodinf.config import Settings
from prodinf.engine.notices import notification_job, snapshot
from prodinf.engine.registry import Registry
from prodinf.engine.waits import Watch
from prodinf.status import HELD, JobStatus, StepStatus
from prodinf.store.rows import JobRows, LockedStep

__all__ = [
    "Lifecycle",
    "claim",
    "fail",
    "retry_later",
    "stop",
    "succeed",
    "undo_failed",
    "undone",
    "wait",
]

log = logging.getLogger(__name__)


# -- steps ------------------------------------------------------------------------------


def claim(
    rows: JobRows, row: LockedStep, *, revert: bool, owner: str, until: datetime, now: datetime
) -> None:
    """``owner`` holds ``row`` until ``until`` to run it (or undo it, with ``revert``)."""
    job = rows.job
    since = _ready_since(rows, row)
    if since is not None:
        waited = (now - since).total_seconds()
        rows.on_commit.append(partial(metrics.started_after, job.queue, waited))
    if row.status in HELD:
        rows.note(
            "step.resumed", row.name, f"the worker holding {row.name} stopped answering; resuming"
        )
        rows.on_commit.append(partial(metrics.step_abandoned, job.kind, row.name))
    elif revert:
        rows.note("step.reverting", row.name, f"reverting {row.name}")
    elif row.status == StepStatus.PENDING:
        rows.note("step.started", row.name, f"started {row.name}")
    row.status = StepStatus.REVERTING if revert else StepStatus.RUNNING
    row.lease_owner = owner
    row.lease_until = until
    row.due_at = None  # set again only by a wake while it runs (see wake_step)
    if not revert:
        row.first_attempt_at = row.first_attempt_at or now
        row.started_at = row.started_at or now
    job.status = JobStatus.RUNNING
    job.started_at = job.started_at or now
    # Not past a wait in another branch: it may come due while this step runs.
    job.next_run_at = min(
        [until, *(s.due_at for s in rows.steps if _waiting(s) and s is not row and s.due_at)]
    )
    job.updated_at = now
    if row.wait_reason is None or row.status != StepStatus.RUNNING:
        job.progress_message = f"{row.status} {row.name}"


def succeed(rows: JobRows, row: LockedStep, output: Any, now: datetime) -> None:
    """``row`` ran to its end with ``output``."""
    _release(row)
    row.status = StepStatus.SUCCEEDED
    row.output = output
    row.error = None
    row.due_at = None
    row.wait_reason = None
    row.finished_at = now
    rows.job.progress_done += 1
    rows.job.updated_at = now
    rows.note("step.succeeded", row.name, f"{row.name} succeeded")


def wait(
    rows: JobRows,
    row: LockedStep,
    *,
    until: datetime,
    reason: str,
    state: dict[str, Any],
    watch: Watch | None,
    now: datetime,
) -> None:
    """``row`` waits, holding no worker, until ``until`` (or its ``watch`` wakes it);
    ``state`` is merged into what it keeps. ``reason`` is shown, already masked."""
    _release(row)
    row.status = StepStatus.WAITING
    row.due_at = until
    row.state = {**row.state, **state}
    if watch is not None:  # a fresh watch: forget what an old one found
        row.state = {k: v for k, v in row.state.items() if k != "watched"}
        rows.watches.append((row.name, watch))
    if row.wait_reason != reason:
        rows.note("step.waiting", row.name, reason)
    row.wait_reason = reason
    rows.job.progress_message = reason
    rows.job.updated_at = now


def retry_later(
    rows: JobRows,
    row: LockedStep,
    *,
    until: datetime,
    reason: str,
    error: dict[str, Any],
    trace: str,
    now: datetime,
) -> None:
    """``row`` failed with ``error`` (an ``error_info``) and runs again at ``until``."""
    _release(row)
    row.error = error
    row.status = StepStatus.WAITING
    row.due_at = until
    row.wait_reason = reason[:500]
    rows.job.progress_message = row.wait_reason
    rows.job.updated_at = now
    rows.note("step.retrying", row.name, row.wait_reason, {"traceback": trace})


def fail(rows: JobRows, row: LockedStep, error: dict[str, Any], trace: str, now: datetime) -> None:
    """``row`` failed for good with ``error``: the job fails (and reverts what it can)."""
    _release(row)
    row.error = error
    row.status = StepStatus.FAILED
    row.finished_at = now
    row.wait_reason = None
    rows.job.error = error
    rows.job.updated_at = now
    rows.note("step.failed", row.name, error["message"], {"traceback": trace})


def undone(rows: JobRows, row: LockedStep, now: datetime) -> None:
    """``row`` was undone."""
    _release(row)
    row.status = StepStatus.REVERTED
    row.finished_at = now
    rows.job.updated_at = now
    rows.note("step.reverted", row.name, f"reverted {row.name}")


def undo_failed(
    rows: JobRows, row: LockedStep, error: dict[str, Any], trace: str, now: datetime
) -> None:
    """Undoing ``row`` failed with ``error``: what it did is still in place."""
    _release(row)
    row.status = StepStatus.REVERT_FAILED
    row.error = error
    row.finished_at = now
    rows.job.updated_at = now
    rows.note("step.revert_failed", row.name, error["message"], {"traceback": trace})


def stop(steps: list[LockedStep], statuses: frozenset[StepStatus]) -> None:
    """Mark the ``steps`` in ``statuses`` cancelled: nothing of an ended job waits or runs."""
    for step in steps:
        if step.status in statuses:
            step.status = StepStatus.CANCELLED
            step.due_at = None
            step.wait_reason = None
            _release(step)


def _ready_since(rows: JobRows, row: LockedStep) -> datetime | None:
    """Since when ``row``, about to be claimed, has been ready for a worker: its job
    queued, its wait or retry come due, its lease run out; ``None`` when the run before
    it (of this job) made it ready."""
    if rows.job.status == JobStatus.QUEUED:
        return rows.job.updated_at
    if row.status == StepStatus.WAITING:
        return row.due_at
    return row.lease_until if row.status in HELD else None


def _release(row: LockedStep) -> None:
    row.lease_owner = None
    row.lease_until = None


def _waiting(step: LockedStep) -> bool:
    return step.status == StepStatus.WAITING


#: What a job's end stops: a cancel stops what has not started too.
_STOPPED_BY = {
    JobStatus.CANCELLED: frozenset(
        {StepStatus.PENDING, StepStatus.WAITING, StepStatus.RUNNING, StepStatus.REVERTING}
    ),
    JobStatus.FAILED: frozenset({StepStatus.WAITING, StepStatus.RUNNING, StepStatus.REVERTING}),
    JobStatus.REVERTED: frozenset({StepStatus.WAITING, StepStatus.RUNNING, StepStatus.REVERTING}),
    JobStatus.SUCCEEDED: frozenset(),
}


# -- jobs -------------------------------------------------------------------------------


class Lifecycle:
    """The transitions of a job as a whole: end, cancel, retry.

    ``registry`` and ``settings`` make the notification a job's ``notify`` asks for,
    inserted with the rows that end it (see :mod:`prodinf.engine.notices`).
    """

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    def finish(
        self, rows: JobRows, status: JobStatus, now: datetime, *, result: Any = None
    ) -> None:
        """End the job ``status`` (``result`` when it succeeded); stop what still waits or
        runs; leave its notification behind."""
        job, steps = rows.job, rows.steps
        stop(steps, _STOPPED_BY[status])
        if status == JobStatus.SUCCEEDED:
            job.result = result
            message = str(status)
        elif status == JobStatus.CANCELLED:
            message = str(status)
        else:
            reason = (job.error or {}).get("message", "")
            message = f"{status}: {reason}"[:500]
        job.status = status
        job.progress_message = message
        job.progress_done = sum(1 for s in steps if s.status == StepStatus.SUCCEEDED)
        job.finished_at = now
        job.next_run_at = None
        job.updated_at = now
        rows.note(f"job.{status}", None, message)
        took = (now - job.created_at).total_seconds()
        rows.on_commit.append(partial(metrics.job_finished, job.kind, str(status), took))
        if job.notify:
            self._notify(rows, now)

    def cancel(self, rows: JobRows, now: datetime) -> None:
        """Cancel the job: at once when no step is held, else once the held step ends
        (the runner sees ``cancel_requested`` and finishes it ``cancelled``)."""
        job = rows.job
        job.cancel_requested = True
        job.updated_at = now
        running = next((s for s in rows.steps if s.status in HELD), None)
        if running is None:
            self.finish(rows, JobStatus.CANCELLED, now)
        else:
            rows.note(
                "job.cancel_requested", None, f"cancel requested; stopping after {running.name}"
            )

    def retry(
        self, rows: JobRows, now: datetime, *, resend_after: float, since: str | None = None
    ) -> None:
        """Queue an ended job again from where it stopped: steps that succeeded keep
        their outputs; failed, reverted and cancelled ones start afresh. With ``since``
        (a step's name), that step and every step after it start afresh too."""
        job = rows.job
        again = []
        names = [step.name for step in rows.steps]
        redo = set(names[names.index(since) :]) if since in names else set()
        for step in rows.steps:
            if step.status == StepStatus.SUCCEEDED and step.name not in redo:
                continue
            if step.status != StepStatus.PENDING:
                again.append(step.name)
            step.status = StepStatus.PENDING
            step.attempts = 0
            step.error = None
            step.due_at = None
            step.wait_reason = None
            step.first_attempt_at = None
            step.started_at = None
            step.finished_at = None
            step.output = None
            step.state = {}
        job.progress_done = sum(1 for s in rows.steps if s.status == StepStatus.SUCCEEDED)
        job.status = JobStatus.QUEUED
        job.cancel_requested = False
        job.error = None
        job.result = None
        job.finished_at = None
        job.updated_at = now
        job.progress_message = "queued for retry"
        # Unless the message sent after commit is confirmed, the reconciler sends another then.
        job.next_run_at = now + timedelta(seconds=resend_after)
        said = ", ".join(again) or "remaining steps"
        rows.note(
            "job.retried", None, f"restarting from {since}: {said}" if since else f"retrying {said}"
        )

    def _notify(self, rows: JobRows, now: datetime) -> None:
        """Add the notification of the job's end to the rows this transaction writes."""
        job = rows.job
        new = notification_job(self.registry, self.settings, snapshot(job), job.notify or {}, now)
        if new is not None:
            rows.spawned.append(new)
            rows.note("notification.queued", None, f"notification job {new.id}")
