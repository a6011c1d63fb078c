"""The lifecycle of a job and of its steps: every status, and which ones end a job.

::

    job:   queued ─> running <─> waiting ─> succeeded | failed | cancelled | reverted
    step:  pending ─> running ─> succeeded ─> reverting ─> reverted | revert_failed
                        │  ^
                        v  │
                      waiting ─> failed | cancelled

The one place these names are written: the store, the engine, the API (its OpenAPI
enum), the pages and the CLI all use these members, and a test checks that no status
is spelled as a bare string anywhere else. Both are ``StrEnum``: a member equals,
hashes and serialises as its value, so rows read back as plain text compare equal.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ACTIVE",
    "HANDOVER_STATUS",
    "HELD",
    "RETRYABLE",
    "TERMINAL",
    "HandoverStatus",
    "JobStatus",
    "StepStatus",
]


class JobStatus(StrEnum):
    """Where a job stands."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REVERTED = "reverted"


class StepStatus(StrEnum):
    """Where one step of a job stands."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVERTING = "reverting"
    REVERTED = "reverted"
    REVERT_FAILED = "revert_failed"
    CANCELLED = "cancelled"


class HandoverStatus(StrEnum):
    """Where a handover stands, in its users' words (from its job's status)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"


#: Job statuses after which nothing more happens (unless retried).
TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.REVERTED}
)
#: Job statuses of a job that is not over: the reconciler looks after these.
ACTIVE: frozenset[JobStatus] = frozenset(JobStatus) - TERMINAL
#: Job statuses from which ``retry`` runs a job again.
RETRYABLE: frozenset[JobStatus] = frozenset(
    {JobStatus.FAILED, JobStatus.REVERTED, JobStatus.CANCELLED}
)
#: Step statuses of a step a worker holds under a lease.
HELD: frozenset[StepStatus] = frozenset({StepStatus.RUNNING, StepStatus.REVERTING})
#: The handover status each job status means: waiting is running, reverted is failed
#: (the staging copy dropped), cancelled is stopped.
HANDOVER_STATUS: dict[JobStatus, HandoverStatus] = {
    JobStatus.QUEUED: HandoverStatus.QUEUED,
    JobStatus.RUNNING: HandoverStatus.RUNNING,
    JobStatus.WAITING: HandoverStatus.RUNNING,
    JobStatus.SUCCEEDED: HandoverStatus.SUCCEEDED,
    JobStatus.FAILED: HandoverStatus.FAILED,
    JobStatus.REVERTED: HandoverStatus.FAILED,
    JobStatus.CANCELLED: HandoverStatus.STOPPED,
}
