"""Events: what happens to a dataset starts the processes subscribed to it.

An event is recorded (:mod:`prodinf.kinds.event_record`) with the ``event`` job that
handles it; the subscriptions that match are snapshotted into the job's params then,
their params rendered and validated: editing the subscriptions file later changes no
recorded event, and a process whose params do not render or validate fails at once,
named, while the others run.

The ``event`` job (queue ``event``) has one step that starts each process as a child
job (:meth:`StepContext.start`) once those it comes ``after`` have succeeded, and is
woken by the end of the last one running (or each one's, while a process waits for
one to start). It ends ``succeeded`` when every process succeeded (an event nobody
subscribes to succeeds, saying so), else ``failed``, naming the processes that
failed and those skipped because one they came after did not succeed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prodinf import Child, Flow, Step, StepContext, job_kind
from prodinf.exceptions import PermanentError
from prodinf.status import TERMINAL, JobStatus
from prodinf.store.children import ChildJob
from prodinf.store.types import utcnow

__all__ = ["EventParams", "Process", "succeeded_output"]

#: Where a process stands: as its job does, or skipped, ready or blocked by ``after``.
OK, FAILED, RUNNING = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.RUNNING
SKIPPED, READY, BLOCKED = "skipped", "ready", "blocked"
#: A process coalesced into another event's, whose run has not ended.
FOLLOWING = "following"
#: Seconds between looks at the run a coalesced process follows.
FOLLOW_EVERY = 5.0


class Process(BaseModel):
    """One subscription's process, as the event was recorded."""

    model_config = ConfigDict(extra="forbid")

    subscription: str
    kind: str
    target: str = ""
    params: dict[str, Any] | None = None
    after: list[str] = Field(default_factory=list)
    error: str | None = None
    queue: str | None = None
    coalesce_key: str | None = None
    window: float | None = None
    #: Coalescing: when this event's own process may start (its window closes) ...
    start_at: str | None = None
    #: ... or the event (``event``, and its job: ``job``) whose process this one was
    #: coalesced into.
    coalesced_into: dict[str, str] | None = None


class EventParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(description="The event this job handles.")
    processes: list[Process] = Field(default_factory=list)


def _processes(ctx: StepContext[EventParams]) -> Any:
    """Start what is ready, wait for what runs, end when every process is over.

    A process that opened a coalescing window starts when the window closes; one that
    was coalesced into another event's process follows that run (looked at every
    :data:`FOLLOW_EVERY` seconds) and ends as it does.

    A ``retry`` of the event clears this step's state: the next execution finds the
    processes of the earlier round, keeps those that succeeded and starts the failed
    and skipped ones again, as ``<subscription>~<round>`` (a coalesced one then runs
    on its own).
    """
    processes = {p.subscription: p for p in ctx.params.processes}
    if not processes:
        return succeeded_output({})
    children = ctx.children()
    rounds = [_round_of(name) for name in children]
    this = int(ctx.state.get("round") or (max(rounds) + 1 if rounds else 1))
    if this == 1 and "round" not in ctx.state and _followed_failed(ctx, processes):
        # A fresh state (a retry clears it) and no children of its own, but a run it was
        # coalesced into has failed: a retry, whose round runs the process itself. (A
        # first execution comes as the event is recorded, inside the window.)
        this = 2

    def named(sub: str) -> str:
        return sub if this == 1 else f"{sub}~{this}"

    used: dict[str, ChildJob] = {}  # the child that stands for each subscription
    for name, child in sorted(children.items(), key=lambda item: _round_of(item[0])):
        sub = name.split("~", 1)[0]
        if name == named(sub) or child.status == JobStatus.SUCCEEDED:
            used[sub] = child
    now = utcnow()
    wake: list[float] = []  # seconds until a window closes, or the next look at a run
    held: set[str] = set()  # ready, but their coalescing window is open
    state: dict[str, str] = {}  # succeeded | failed | running | following | skipped | ...
    for sub, proc in processes.items():
        if proc.error is not None:
            state[sub] = FAILED
        elif sub in used:
            state[sub] = _state_of(used[sub])
        elif proc.coalesced_into is not None:
            followed = _followed(ctx, proc.coalesced_into["job"], sub)
            if followed is not None:
                used[sub] = followed
            outcome = _state_of(followed) if followed is not None else FOLLOWING
            if outcome in (RUNNING, FOLLOWING):
                state[sub] = FOLLOWING
                wake.append(FOLLOW_EVERY)
            elif outcome == OK or this == 1:
                state[sub] = outcome
        elif proc.start_at is not None:
            opens = (datetime.fromisoformat(proc.start_at) - now).total_seconds()
            if opens > 0:
                held.add(sub)
                wake.append(opens)
    changed = True
    while changed:  # settle what is skipped, ready or blocked, following ``after``
        changed = False
        for sub, proc in processes.items():
            if sub in state and state[sub] not in (READY, BLOCKED):
                continue
            before = [state.get(a, BLOCKED) for a in proc.after]
            new = (
                SKIPPED
                if any(b in (FAILED, SKIPPED) for b in before)
                else READY
                if all(b == OK for b in before)
                else BLOCKED
            )
            if state.get(sub) != new:
                state[sub], changed = new, True
    going = [
        Child(named(sub), processes[sub].kind, processes[sub].params or {}, processes[sub].queue)
        for sub, s in state.items()
        if s in (READY, RUNNING) and sub not in held
    ]
    waiting = sorted(n for n, s in state.items() if s not in (OK, FAILED, SKIPPED))
    if waiting:
        reason = f"waiting for {', '.join(waiting)}"
        if going:
            # woken by each end only when a process waits for one to start
            return ctx.start(
                going,
                reason,
                timeout=min(wake, default=7 * 86400.0),
                last=BLOCKED not in state.values(),
                round=this,
            )
        return ctx.wait(min(wake, default=60.0), reason, round=this)
    report = {sub: _report(processes[sub], state[sub], used.get(sub)) for sub in processes}
    failed = sorted(n for n, s in state.items() if s == FAILED)
    skipped = sorted(n for n, s in state.items() if s == SKIPPED)
    if failed or skipped:
        said = f"failed: {', '.join(failed)}" if failed else ""
        if skipped:
            said += ("; " if said else "") + f"skipped: {', '.join(skipped)}"
        raise PermanentError(f"event processes {said}", processes=report)
    return succeeded_output(report)


def succeeded_output(processes: dict[str, Any]) -> dict[str, Any]:
    """The event job's output when it succeeds."""
    if not processes:
        return {"processes": {}, "message": "no subscription matches this event"}
    return {"processes": processes}


def _state_of(child: ChildJob) -> str:
    if child.status not in TERMINAL:
        return RUNNING
    return OK if child.status == JobStatus.SUCCEEDED else FAILED


def _followed(ctx: StepContext[EventParams], job: str, sub: str) -> ChildJob | None:
    """The newest run of ``sub`` that the event job ``job`` started, if any."""
    runs = {n: c for n, c in ctx.children(of=job).items() if n.split("~", 1)[0] == sub}
    return runs[max(runs, key=_round_of)] if runs else None


def _followed_failed(ctx: StepContext[EventParams], processes: dict[str, Process]) -> bool:
    for sub, proc in processes.items():
        if proc.coalesced_into is not None:
            followed = _followed(ctx, proc.coalesced_into["job"], sub)
            if followed is not None and _state_of(followed) == FAILED:
                return True
    return False


def _report(proc: Process, state: str, child: ChildJob | None) -> dict[str, Any]:
    shown: dict[str, Any] = {"status": state, "job": child.id if child else None}
    if proc.error:
        shown["error"] = proc.error
    if proc.coalesced_into:
        shown["coalesced_into"] = proc.coalesced_into
    return shown


def _round_of(name: str) -> int:
    """The round a child was started in: ``check`` is 1, ``check~3`` is 3."""
    _, _, number = name.partition("~")
    return int(number) if number.isdigit() else 1


@job_kind("event", queue="event", params=EventParams, internal=True)
def event(params: EventParams) -> Flow:
    """Start the processes subscribed to an event, each once its ``after`` succeeded,
    and wait for them all."""
    return Flow.of(Step("processes", _processes))
