"""Events: what happens to a dataset starts the processes subscribed to it.

``record_event`` stores an event (type, dataset and what the naming rules read in it,
payload, source, idempotency key) together with the ``event`` job that handles it, in
one transaction, then sends the job's message. The subscriptions that match are
snapshotted into the job's params when the event is recorded, their params rendered
and validated then: editing the subscriptions file later changes no recorded event,
and a process whose params do not render or validate fails at once, named, while the
others run.

The ``event`` job (queue ``event``) has one step that starts each process as a child
job (:meth:`StepContext.start`) once those it comes ``after`` have succeeded, and is
woken by each one's end. It ends ``succeeded`` when every process succeeded (an event
nobody subscribes to succeeds, saying so), else ``failed``, naming the processes that
failed and those skipped because one they came after did not succeed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from prodinf import Child, Flow, Step, StepContext, job_kind
from prodinf.config import Settings
from prodinf.databases.naming import load_naming_rules
from prodinf.engine.messages import Messages, Publish
from prodinf.engine.newjob import new_job, waiting_on
from prodinf.engine.registry import Registry
from prodinf.engine.service import check_key
from prodinf.exceptions import BrokerUnavailable, PermanentError, ProdinfError, ValidationError
from prodinf.kinds.subscriptions import Match, load_subscriptions
from prodinf.status import TERMINAL, JobStatus
from prodinf.store import JobStore
from prodinf.store.children import LAST, WAKE, ChildJob, child_key
from prodinf.store.events import (
    WindowTaken,
    claim_window,
    delete_event,
    event_by_key,
    event_exists,
    event_job,
    insert_event,
)
from prodinf.store.rows import NewRows
from prodinf.store.submissions import delete_job
from prodinf.store.types import utcnow

__all__ = ["EventParams", "Process", "preview_event", "record_event", "recorded_with_step"]

#: Where a process stands: as its job does, or skipped, ready or blocked by ``after``.
OK, FAILED, RUNNING = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.RUNNING
SKIPPED, READY, BLOCKED = "skipped", "ready", "blocked"
#: A process coalesced into another event's, whose run has not ended.
FOLLOWING = "following"
#: Seconds between looks at the run a coalesced process follows.
FOLLOW_EVERY = 5.0

#: Longest event type, dataset name and source: the lengths of their columns.
MAX_TYPE, MAX_DATASET, MAX_SOURCE = 100, 200, 200


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
        return {"processes": {}, "message": "no subscription matches this event"}
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
    return {"processes": report}


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


@job_kind("event", queue="event", params=EventParams)
def event(params: EventParams) -> Flow:
    """Start the processes subscribed to an event, each once its ``after`` succeeded,
    and wait for them all."""
    return Flow.of(Step("processes", _processes))


def preview_event(
    settings: Settings, registry: Registry, document: dict[str, Any]
) -> tuple[dict[str, Any], list[Match]]:
    """The event ``document`` describes, checked, and the processes it would start, their
    params rendered and validated (what ``dry_run`` answers). Stores nothing."""
    event = _checked(settings, document)
    matches = load_subscriptions(settings.subscriptions).matching(
        {**event, "dataset": _dataset_view(event)}
    )
    for match in matches:
        if match.error is not None or match.params is None:
            continue
        try:
            spec = registry.get(match.kind)
            match.params = spec.validate(match.params).model_dump(mode="json")
        except ProdinfError as exc:
            match.params, match.error = None, exc.message
    return event, matches


def record_event(
    store: JobStore,
    registry: Registry,
    settings: Settings,
    publish: Publish,
    document: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    """Record the event ``document`` describes and send its job; return (the event with
    its ``processes``, created). A repeated idempotency key returns the first event.

    :raises ValidationError: a field is missing or wrong (the message names it).
    :raises BrokerUnavailable: the job's message could not be sent; nothing is kept.
    """
    key = document.get("idempotency_key")
    if key is not None:
        found = event_by_key(store, key) if isinstance(key, str) else None
        if found is not None:
            return found, False
    event, matches = preview_event(settings, registry, document)
    now = utcnow()
    job, children = _event_job(registry, settings, event, matches, now)
    stored = job.values["params"]["processes"]
    for attempt in range(1, 6):
        try:
            with store.transaction() as conn:
                _write(conn, event, job, children, now)
            break
        except (IntegrityError, WindowTaken):
            found = event_by_key(store, key) if key is not None else None
            if found is not None:
                return found, False
            if attempt == 5 or not any(p["coalesce_key"] for p in stored):
                raise
    messages = Messages(store, publish, settings)
    try:
        for sent in children or [job]:
            messages.send(sent.id, sent.queue, sent.next_run_at)
    except BrokerUnavailable:
        for made in (*children, job):
            delete_job(store, made.id)
        delete_event(store, event["id"])  # nothing handles it
        raise
    shown = {
        **event,
        "created_at": now.isoformat(),
        "job_id": job.id,
        "status": job.values["status"],
        "processes": stored,
    }
    return shown, True


def recorded_with_step(
    registry: Registry, settings: Settings, documents: list[dict[str, Any]]
) -> tuple[list[str], Callable[[Connection, datetime], list[NewRows]]]:
    """For a step that records events with its success (return ``Commit(output,
    write)``): the ids of the events ``documents`` describe, and the ``write`` that
    records them and their jobs in the transaction that finishes the step, so they
    are there exactly when the step is done (never lost, never twice).

    Each document needs an ``idempotency_key`` (from the job and step): the event's id
    is made from it, and an event an earlier run of the step recorded is not
    recorded again.

    :raises ValidationError: a document is wrong (the message names the field).
    """
    previewed = [preview_event(settings, registry, document) for document in documents]
    for event, _ in previewed:  # the same ids each time the step runs
        event["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"prodinf:{event['idempotency_key']}"))

    def write(conn: Connection, now: datetime) -> list[NewRows]:
        jobs = []
        for event, matches in previewed:
            if event_exists(conn, event["id"]):  # an earlier run of the step recorded it
                continue
            job, children = _event_job(registry, settings, event, matches, now)
            # a job waiting for its processes needs no message: inserted here, and its
            # processes by the caller with the step's record (sent after the commit);
            # else the caller inserts and sends the job
            _write(conn, event, job, [], now, insert_job=bool(children))
            jobs.extend(children or [job])
        return jobs

    return [event["id"] for event, _ in previewed], write


def _event_job(
    registry: Registry,
    settings: Settings,
    event: dict[str, Any],
    matches: list[Match],
    now: datetime,
) -> tuple[NewRows, list[NewRows]]:
    """The rows of the ``event`` job that handles ``event``, its processes snapshotted,
    and the processes started with it.

    When every process can start at once (none comes ``after`` another, coalesces, or
    failed to render), they are started as the event is recorded, in its transaction,
    and the job starts out waiting for the last of them to end: what its first run
    would do, without that run or its message.
    """
    processes = [Process(**m.model_dump()) for m in matches]
    params = EventParams(event_id=event["id"], processes=processes)
    spec = registry.get("event")
    job = new_job(
        spec,
        params.model_dump(mode="json"),
        spec.flow(params),
        settings,
        now,
        submitted_by=event["source"],
    )
    if not processes or any(
        p.error is not None or p.after or p.coalesce_key is not None for p in processes
    ):
        return job, []
    step = job.steps[0]["name"]
    children = {}
    for proc in processes:
        kind = registry.get(proc.kind)
        valid = kind.validate(proc.params or {})
        children[proc.subscription] = new_job(
            kind,
            valid.model_dump(mode="json"),
            kind.flow(valid),
            settings,
            now,
            idempotency_key=child_key(job.id, step, proc.subscription),
            submitted_by=f"job {job.id}",
            parent=(job.id, step),
            queue=proc.queue,
        )
    waiting_on(
        job,
        children,
        reason=f"waiting for {', '.join(sorted(children))}",
        until=now + timedelta(days=7),
        state={"round": 1, WAKE: LAST},
    )
    return job, list(children.values())


def _write(
    conn: Connection,
    event: dict[str, Any],
    job: NewRows,
    children: list[NewRows],
    now: datetime,
    *,
    insert_job: bool = True,
) -> None:
    """Open or join each process's coalescing window, then insert the event (and its
    job and the processes started with it, unless the caller inserts the job), in one
    transaction."""
    for proc in job.values["params"]["processes"]:
        if proc["coalesce_key"] is None or proc["error"] is not None:
            continue
        owner, closes = claim_window(
            conn, proc["subscription"], proc["coalesce_key"], event["id"], now, proc["window"]
        )
        if owner == event["id"]:
            proc["start_at"] = closes.isoformat()
        else:
            proc["coalesced_into"] = {"event": owner, "job": event_job(conn, owner)}
    insert_event(conn, {**event, "created_at": now}, job, insert_job=insert_job)
    if insert_job:
        for child in children:
            child.insert(conn)


def _checked(settings: Settings, document: Any) -> dict[str, Any]:
    """The event's row values from a submitted document; ``ValidationError`` names the field."""
    if not isinstance(document, dict):
        raise ValidationError("the body must be a JSON object", field="body")
    unknown = sorted(set(document) - {"type", "dataset", "payload", "source", "idempotency_key"})
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    kind = document.get("type")
    if not isinstance(kind, str) or not 0 < len(kind.strip()) <= MAX_TYPE or kind != kind.strip():
        raise ValidationError(
            f"type must be an event type of 1 to {MAX_TYPE} characters", field="type"
        )
    dataset = document.get("dataset")
    if dataset is not None and (
        not isinstance(dataset, str) or not 0 < len(dataset) <= MAX_DATASET
    ):
        raise ValidationError(
            f"dataset must be a database name of 1 to {MAX_DATASET} characters", field="dataset"
        )
    payload = document.get("payload", {})
    if not isinstance(payload, dict):
        raise ValidationError("payload must be a JSON object", field="payload")
    source = document.get("source")
    if source is not None and (not isinstance(source, str) or len(source) > MAX_SOURCE):
        raise ValidationError(f"source must be at most {MAX_SOURCE} characters", field="source")
    key = document.get("idempotency_key")
    if key is not None:
        check_key(key)
    attributes = None
    if dataset is not None:
        found = load_naming_rules(settings.naming_rules).match(dataset)
        attributes = found.as_dict() if found is not None else None
    return {
        "id": str(uuid.uuid4()),
        "type": kind,
        "dataset": dataset,
        "attributes": attributes,
        "payload": payload,
        "source": source,
        "idempotency_key": key,
    }


def _dataset_view(event: dict[str, Any]) -> dict[str, Any] | None:
    """What templates and ``where`` see as ``dataset``: its name and attributes."""
    if event["dataset"] is None:
        return None
    return {**(event["attributes"] or {}), "name": event["dataset"]}
