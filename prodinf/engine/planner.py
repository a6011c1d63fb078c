"""Decides what a job does next from the state of its steps. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from prodinf.store.models import JobRow, StepRow

__all__ = ["Claim", "Decision", "Finish", "Idle", "plan"]


@dataclass(frozen=True)
class Claim:
    """Run ``step`` (or undo it, when ``revert``); ``fanout``: other steps are ready too."""

    step: StepRow
    revert: bool = False
    fanout: bool = False


@dataclass(frozen=True)
class Finish:
    """The job has reached a terminal ``status``."""

    status: str


@dataclass(frozen=True)
class Idle:
    """Nothing to run now; the job is ``status`` until ``next_run_at``."""

    status: str
    next_run_at: datetime | None


Decision = Claim | Finish | Idle


def plan(
    job: JobRow, steps: Sequence[StepRow], revertible: Collection[str], now: datetime
) -> Decision:
    """What ``job`` should do next, given its ``steps`` at time ``now``.

    A step whose lease ran out (its worker died) is claimable again. After a
    permanent failure, succeeded steps with a revert are undone, latest first.
    """
    by_name = {step.name: step for step in steps}
    live = [s for s in steps if s.status in ("running", "reverting") and _leased(s, now)]
    stale = [s for s in steps if s.status in ("running", "reverting") and not _leased(s, now)]
    busy_until = min((s.lease_until for s in live if s.lease_until), default=None)

    if job.cancel_requested:
        return Idle("running", busy_until) if live else Finish("cancelled")

    if any(s.status == "failed" for s in steps):
        if live:
            return Idle("running", busy_until)
        for step in stale:
            if step.status == "reverting":
                return Claim(step, revert=True)
        undo = [s for s in steps if s.status == "succeeded" and s.name in revertible]
        if undo:
            undo.sort(key=lambda s: (s.finished_at or now, s.position), reverse=True)
            return Claim(undo[0], revert=True)
        return Finish("reverted" if any(s.status == "reverted" for s in steps) else "failed")

    ready = [
        s
        for s in steps
        if (s.status == "pending" and all(by_name[d].status == "succeeded" for d in s.after))
        or (s.status == "waiting" and (s.due_at is None or s.due_at <= now))
        or (s in stale)
    ]
    if ready:
        return Claim(ready[0], fanout=len(ready) > 1)
    if all(s.status == "succeeded" for s in steps):
        return Finish("succeeded")
    if live:
        return Idle("running", busy_until)
    due = [s.due_at for s in steps if s.status == "waiting" and s.due_at is not None]
    if due:
        return Idle("waiting", min(due))
    return Idle(job.status, None)


def _leased(step: StepRow, now: datetime) -> bool:
    return step.lease_until is not None and step.lease_until > now
