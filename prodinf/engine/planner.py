"""Decides what a job does next from the state of its steps. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from prodinf.status import HELD, JobStatus, StepStatus

__all__ = ["Claim", "Decision", "Finish", "Idle", "JobView", "StepView", "earliest", "plan"]


class JobView(Protocol):
    """What the planner reads of a job (a ``JobRow``, or the runner's locked copy)."""

    @property
    def status(self) -> str: ...
    @property
    def cancel_requested(self) -> bool: ...


class StepView(Protocol):
    """What the planner reads of a step (a ``StepRow``, or the runner's locked copy)."""

    @property
    def name(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def after(self) -> Sequence[str]: ...
    @property
    def status(self) -> str: ...
    @property
    def due_at(self) -> datetime | None: ...
    @property
    def lease_until(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...


S = TypeVar("S", bound=StepView)


@dataclass(frozen=True)
class Claim(Generic[S]):
    """Run ``step`` (or undo it, when ``revert``); ``fanout``: other steps are ready too."""

    step: S
    revert: bool = False
    fanout: bool = False


@dataclass(frozen=True)
class Finish:
    """The job has reached a terminal ``status``."""

    status: JobStatus


@dataclass(frozen=True)
class Idle:
    """Nothing to run now; the job is ``status`` until ``next_run_at``."""

    status: JobStatus
    next_run_at: datetime | None


Decision = Claim[Any] | Finish | Idle


def plan(
    job: JobView, steps: Sequence[S], revertible: Collection[str], now: datetime
) -> Claim[S] | Finish | Idle:
    """What ``job`` should do next, given its ``steps`` at time ``now``.

    A step whose lease ran out (its worker died) is claimable again. A pending
    step is ready once all its ancestors have succeeded. After a permanent
    failure, succeeded steps with a revert are undone, latest first, even if a
    cancel was requested; the job ends ``reverted``, or ``failed`` if nothing
    was undone or an undo failed.
    """
    by_name = {step.name: step for step in steps}
    live = [s for s in steps if s.status in HELD and _leased(s, now)]
    stale = [s for s in steps if s.status in HELD and not _leased(s, now)]
    busy_until = min((s.lease_until for s in live if s.lease_until), default=None)

    # Undoing goes on even when a cancel is requested: a cancel stops the work,
    # it must not leave the work half undone.
    if any(s.status == StepStatus.FAILED for s in steps):
        if live:
            return Idle(JobStatus.RUNNING, busy_until)
        for step in stale:
            if step.status == StepStatus.REVERTING:
                return Claim(step, revert=True)
        undo = [s for s in steps if s.status == StepStatus.SUCCEEDED and s.name in revertible]
        if undo:
            undo.sort(key=lambda s: (s.finished_at or now, s.position), reverse=True)
            return Claim(undo[0], revert=True)
        if any(s.status == StepStatus.REVERT_FAILED for s in steps):
            return Finish(JobStatus.FAILED)  # something is still in place: not "reverted"
        undone = any(s.status == StepStatus.REVERTED for s in steps)
        return Finish(JobStatus.REVERTED if undone else JobStatus.FAILED)

    if job.cancel_requested:
        return Idle(JobStatus.RUNNING, busy_until) if live else Finish(JobStatus.CANCELLED)

    ready = [
        s
        for s in steps
        if (s.status == StepStatus.PENDING and _ancestors_succeeded(s, by_name))
        or (s.status == StepStatus.WAITING and (s.due_at is None or s.due_at <= now))
        or (s in stale)
    ]
    if ready:
        return Claim(ready[0], fanout=len(ready) > 1)
    if all(s.status == StepStatus.SUCCEEDED for s in steps):
        return Finish(JobStatus.SUCCEEDED)
    next_due = min(
        (s.due_at for s in steps if s.status == StepStatus.WAITING and s.due_at is not None),
        default=None,
    )
    if live:
        # A wait in another branch may come due before the running step's lease ends.
        return Idle(JobStatus.RUNNING, earliest(busy_until, next_due))
    if next_due is not None:
        return Idle(JobStatus.WAITING, next_due)
    return Idle(JobStatus(job.status), None)


def earliest(*times: datetime | None) -> datetime | None:
    """The earliest of ``times`` that are not ``None`` (``None`` if none is)."""
    return min((t for t in times if t is not None), default=None)


def _ancestors_succeeded(step: StepView, by_name: Mapping[str, StepView]) -> bool:
    # Every ancestor, not only the direct ones: after a retry, a step whose
    # direct dependency kept its success may still need an earlier step redone.
    seen: set[str] = set()
    todo = list(step.after)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        dep = by_name.get(name)
        if dep is None or dep.status != StepStatus.SUCCEEDED:
            return False
        todo.extend(dep.after)
    return True


def _leased(step: StepView, now: datetime) -> bool:
    return step.lease_until is not None and step.lease_until > now
