"""Child jobs: the jobs a step starts and waits for, and the wake-up of that step.

A child is a job like any other, with ``parent_id`` and ``parent_step`` set and an
idempotency key made from them and the child's name (``<parent id>/<step>/<name>``),
so a step run again after a crash starts none twice. When a child ends, the
transaction that records its end also makes the parent's step due now (if it is
waiting), and the caller sends the parent's message after the commit: the parent
runs again at once, not when a poll comes round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from prodinf.status import TERMINAL, JobStatus, StepStatus
from prodinf.store.models import JOBS, STEPS

__all__ = [
    "EACH",
    "LAST",
    "WAKE",
    "ChildJob",
    "child_key",
    "children_of",
    "open_children",
    "step_output",
    "wake_step",
]


@dataclass(frozen=True)
class ChildJob:
    """A job a step started: its name in that step, and how it stands."""

    name: str
    id: str
    kind: str
    status: str
    result: Any
    error: dict[str, Any] | None


def child_key(parent_id: str, step: str, name: str) -> str:
    """The idempotency key of the child ``name`` of ``step`` of job ``parent_id``."""
    return f"{parent_id}/{step}/{name}"


def children_of(conn: Connection, parent_id: str, step: str) -> dict[str, ChildJob]:
    """The jobs ``step`` of job ``parent_id`` started, by name."""
    rows = conn.execute(
        select(
            JOBS.c.idempotency_key,
            JOBS.c.id,
            JOBS.c.kind,
            JOBS.c.status,
            JOBS.c.result,
            JOBS.c.error,
        ).where(JOBS.c.parent_id == parent_id, JOBS.c.parent_step == step)
    ).all()
    prefix = child_key(parent_id, step, "")
    found = {}
    for key, job_id, kind, status, result, error in rows:
        name = str(key).removeprefix(prefix)
        found[name] = ChildJob(name, job_id, kind, status, result, error)
    return found


def open_children(conn: Connection, parent_id: str) -> list[str]:
    """The ids of the jobs any step of job ``parent_id`` started that have not ended."""
    return [
        str(job_id)
        for job_id in conn.scalars(
            select(JOBS.c.id).where(
                JOBS.c.parent_id == parent_id, JOBS.c.status.not_in(sorted(TERMINAL))
            )
        )
    ]


#: The key of a waiting step's state that says which child ends wake it: each one's,
#: or only the last one's.
WAKE, EACH, LAST = "wake", "each", "last"


def wake_step(
    conn: Connection, parent_id: str, step: str, now: datetime, due: datetime | None = None
) -> str | None:
    """Make ``step`` of job ``parent_id`` due now if it is waiting (a child ended, a
    callback came); the job's queue if it was woken, for its message after commit
    (``due``: when the reconciler sends it if that message is not confirmed; now by
    default), else ``None``.

    A step that is running is marked instead (its ``due_at`` set): if it then returns
    a wait, it runs again at once, for it may have looked before what woke it.
    A step waiting with ``last`` (its state's ``wake``) is woken only once no child of
    it is left running. The job row is locked first, so the ends of two children
    count each other in turn (never both "another still runs"), and in the order
    every transaction that runs the job takes its rows (``JobRows.lock``): the other
    order deadlocks with a parent being claimed while its children end.
    """
    queue = conn.scalar(select(JOBS.c.queue).where(JOBS.c.id == parent_id).with_for_update())
    if queue is None:
        return None
    found = conn.execute(
        select(STEPS.c.id, STEPS.c.status, STEPS.c.state).where(
            STEPS.c.job_id == parent_id, STEPS.c.name == step
        )
    ).first()
    if found is None:
        return None
    if found.status in (StepStatus.RUNNING, StepStatus.REVERTING):
        conn.execute(update(STEPS).where(STEPS.c.id == found.id).values(due_at=now))
        return None
    if found.status != StepStatus.WAITING:
        return None
    if (found.state or {}).get(WAKE) == LAST and conn.scalar(
        select(func.count())
        .select_from(JOBS)
        .where(
            JOBS.c.parent_id == parent_id,
            JOBS.c.parent_step == step,
            JOBS.c.status.not_in(TERMINAL),
        )
    ):
        return None  # another child it waits for still runs; the last one's end wakes it
    conn.execute(update(STEPS).where(STEPS.c.id == found.id).values(due_at=now))
    conn.execute(
        update(JOBS)
        .where(JOBS.c.id == parent_id, JOBS.c.status == JobStatus.WAITING)
        .values(next_run_at=due or now, updated_at=now)
    )
    return str(queue)


def step_output(conn: Connection, job_id: str, step: str) -> tuple[str, Any, Any] | None:
    """Job ``job_id``'s kind, params and the output of its ``step``; ``None`` if there
    is no such job or step."""
    row = conn.execute(
        select(JOBS.c.kind, JOBS.c.params, STEPS.c.output)
        .select_from(JOBS.join(STEPS, STEPS.c.job_id == JOBS.c.id))
        .where(JOBS.c.id == job_id, STEPS.c.name == step)
    ).first()
    return None if row is None else (str(row.kind), row.params, row.output)
