"""Drives a job: claims its next step, runs it, records the outcome, and goes on.

Every transition is committed before anything else happens (a message, the
next step), and a step is held under a lease that a heartbeat renews: if its
worker dies, the lease runs out and the step is claimable again, by a
redelivered message or by the reconciler.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from prodinf.config import Settings
from prodinf.engine.context import StepContext
from prodinf.engine.heartbeat import Heartbeat, Lease
from prodinf.engine.notices import notification_job, snapshot
from prodinf.engine.planner import Claim, Finish, Idle, earliest, plan
from prodinf.engine.registry import Kind, Registry
from prodinf.engine.rows import JobRows, LockedJob, LockedStep
from prodinf.engine.steps import Flow, Step, Wait
from prodinf.exceptions import PermanentError, ProdinfError
from prodinf.redact import redact, redact_text
from prodinf.store import TERMINAL, JobRow, JobStore, StepRow
from prodinf.store.types import utcnow

__all__ = ["Publish", "Runner", "error_info"]

log = logging.getLogger(__name__)

#: Publishes a run message for (job id, queue).
Publish = Callable[[str, str], None]


@dataclass
class _Action:
    job_id: str
    kind: Kind[Any]
    params: BaseModel
    flow: Flow
    step: Step
    revert: bool
    fanout: bool
    queue: str
    attempt: int
    outputs: dict[str, Any]
    state: dict[str, Any]
    output: Any


@dataclass(frozen=True)
class _Built:
    """What a job's kind makes of its params: built once per ``drive``."""

    kind: Kind[Any]
    params: BaseModel
    flow: Flow
    revertible: frozenset[str]


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None
    trace: str = ""
    #: The step's state to store; ``None`` keeps what is stored.
    state: dict[str, Any] | None = field(default_factory=dict)


class Runner:
    """Runs jobs from the store. ``drive(job_id)`` is what a worker's task calls."""

    def __init__(
        self,
        store: JobStore,
        registry: Registry,
        settings: Settings,
        publish: Publish,
        on_finished: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.publish = publish
        self.on_finished = on_finished
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.heartbeat = Heartbeat(store, self.lease)

    def drive(self, job_id: str) -> None:
        """Advance ``job_id`` as far as it goes now; return when it waits, ends or is busy."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        built: dict[str, _Built] = {}  # a job's params never change: build its flow once
        with self.store.transaction() as conn:
            rows = JobRows.lock(conn, job_id)
            action = self._advance(rows, owner, built)
            if rows is not None:
                rows.save(conn)
        if rows is not None:
            self._publish_spawned(rows)
        while isinstance(action, _Action):
            if action.fanout:
                self._fan_out(action)
            outcome = self._run(action, owner)
            # One transaction records the outcome and claims the next step: it
            # reads the rows once and writes what changed once.
            with self.store.transaction() as conn:
                rows = JobRows.lock(conn, job_id)
                if rows is None:
                    log.warning("job %s: gone while %s ran", job_id, action.step.name)
                    return
                self._record(rows, action, owner, outcome)
                action = self._advance(rows, owner, built)
                rows.save(conn)
            self._publish_spawned(rows)
        if isinstance(action, str) and self.on_finished is not None:
            self.on_finished(job_id, action)

    # -- deciding ------------------------------------------------------------

    def _build(self, job: LockedJob, built: dict[str, _Built]) -> _Built:
        done = built.get(job.id)
        if done is None:
            kind = self.registry.get(job.kind)
            params = kind.validate(job.params)
            flow = kind.flow(params)
            revertible = frozenset(s.name for s in flow.steps if s.revert is not None)
            done = built[job.id] = _Built(kind, params, flow, revertible)
        return done

    def _advance(
        self, rows: JobRows | None, owner: str, built: dict[str, _Built]
    ) -> _Action | str | None:
        """Claim the job's next step, or settle its status. Returns a terminal status reached."""
        if rows is None or rows.job.status in TERMINAL:
            return None
        job = rows.job
        now = utcnow()
        try:
            b = self._build(job, built)
        except ProdinfError as exc:
            job.error = {"type": type(exc).__name__, "message": exc.message, "step": None}
            return self._finish(rows, None, "failed", now)
        decision = plan(job, rows.steps, b.revertible, now)
        if isinstance(decision, Idle):
            job.status = decision.status
            job.next_run_at = decision.next_run_at
            job.updated_at = now
            return None
        if isinstance(decision, Finish):
            return self._finish(rows, b, decision.status, now)
        return self._claim(rows, b, decision, owner, now)

    def _claim(
        self, rows: JobRows, b: _Built, decision: Claim[LockedStep], owner: str, now: datetime
    ) -> _Action:
        job, steps, row = rows.job, rows.steps, decision.step
        if row.status in ("running", "reverting"):
            rows.note(
                "step.resumed",
                row.name,
                f"the worker holding {row.name} stopped answering; resuming",
            )
        elif decision.revert:
            rows.note("step.reverting", row.name, f"reverting {row.name}")
        elif row.status == "pending":
            rows.note("step.started", row.name, f"started {row.name}")
        row.status = "reverting" if decision.revert else "running"
        row.lease_owner = owner
        row.lease_until = now + self.lease
        if not decision.revert:
            row.first_attempt_at = row.first_attempt_at or now
            row.started_at = row.started_at or now
        job.status = "running"
        job.started_at = job.started_at or now
        # Not past a wait in another branch: it may come due while this step runs.
        job.next_run_at = earliest(
            row.lease_until, *(s.due_at for s in steps if s.status == "waiting" and s is not row)
        )
        job.updated_at = now
        if row.wait_reason is None or row.status != "running":
            job.progress_message = f"{'reverting' if decision.revert else 'running'} {row.name}"
        return _Action(
            job_id=job.id,
            kind=b.kind,
            params=b.params,
            flow=b.flow,
            step=b.flow.by_name[row.name],
            revert=decision.revert,
            fanout=decision.fanout,
            queue=job.queue,
            attempt=row.attempts + 1,
            outputs={s.name: s.output for s in steps if s.status == "succeeded"},
            state=dict(row.state or {}),
            output=row.output,
        )

    def _finish(self, rows: JobRows, b: _Built | None, status: str, now: datetime) -> str:
        job, steps = rows.job, rows.steps
        if status == "succeeded" and b is not None:
            outputs = {s.name: s.output for s in steps}
            if b.kind.result is not None:
                job.result = b.kind.result(outputs)
            else:
                sinks = b.flow.sinks()
                job.result = (
                    outputs[sinks[-1]]
                    if len(sinks) == 1
                    else {name: outputs[name] for name in sinks}
                )
            message = "succeeded"
        elif status == "cancelled":
            _stop(steps, ("pending", "waiting", "running", "reverting"))
            message = "cancelled"
        else:
            _stop(steps, ("waiting", "running", "reverting"))
            reason = (job.error or {}).get("message", "")
            message = f"{status}: {reason}"[:500]
        job.status = status
        job.progress_message = message
        job.progress_done = sum(1 for s in steps if s.status == "succeeded")
        job.finished_at = now
        job.next_run_at = None
        job.updated_at = now
        rows.note(f"job.{status}", None, message)
        if job.notify:
            self._notify(rows, now)
        return status

    def _notify(self, rows: JobRows, now: datetime) -> None:
        """Add the notification of the job's end to the rows this transaction writes."""
        job = rows.job
        ended = snapshot(job)
        new = notification_job(self.registry, self.settings, ended, job.notify or {}, now)
        if new is not None:
            rows.spawned.append(new)
            rows.note("notification.queued", None, f"notification job {new.id}")

    def _publish_spawned(self, rows: JobRows) -> None:
        # Committed with the job's status: if a publish fails, the reconciler
        # sends the message after redrive_after.
        for new in rows.spawned:
            try:
                self.publish(new.id, new.queue)
            except ProdinfError as exc:
                log.warning("job %s not published yet: %s", new.id, exc)
        rows.spawned = []

    # -- running -------------------------------------------------------------

    def _fan_out(self, action: _Action) -> None:
        # Another ready step can run in parallel on another worker. If this
        # publish fails, nothing is lost: this worker takes it after its step.
        try:
            self.publish(action.job_id, action.queue)
        except ProdinfError as exc:
            log.warning("could not fan out job %s: %s", action.job_id, exc)

    def _run(self, action: _Action, owner: str) -> _Outcome:
        hooks = _Hooks(self.store, action.job_id, action.step.name, owner)
        ctx = StepContext(
            job_id=action.job_id,
            kind=action.kind.name,
            params=action.params,
            step=action.step.name,
            attempt=action.attempt,
            outputs=action.outputs,
            state=action.state,
            settings=self.settings,
            hooks=hooks,
            output=action.output,
        )
        lease = Lease(action.job_id, action.step.name, owner)
        self.heartbeat.hold(lease)
        try:
            fn = action.step.revert if action.revert else action.step.execute
            assert fn is not None  # the planner only reverts steps that have a revert
            outcome = _Outcome(value=fn(ctx), state=ctx.state)
        except Exception as exc:
            outcome = _Outcome(error=exc, trace=traceback.format_exc(), state=ctx.state)
        finally:
            self.heartbeat.release(lease)
        return _checked(outcome, action.step.name, stored=not action.revert)

    def _record(self, rows: JobRows, action: _Action, owner: str, outcome: _Outcome) -> None:
        job = rows.job
        row = next((s for s in rows.steps if s.name == action.step.name), None)
        if row is None or row.lease_owner != owner or row.status not in ("running", "reverting"):
            log.warning("job %s step %s: lease lost; outcome discarded", job.id, action.step.name)
            return
        now = utcnow()
        name = row.name
        row.lease_owner = None
        row.lease_until = None
        if outcome.state is not None:
            row.state = outcome.state
        job.updated_at = now
        error = outcome.error
        if action.revert:
            row.finished_at = now
            if error is None:
                row.status = "reverted"
                rows.note("step.reverted", name, f"reverted {name}")
            else:
                row.status = "revert_failed"
                row.error = error_info(error, name, action.attempt)
                rows.note(
                    "step.revert_failed",
                    name,
                    row.error["message"],
                    {"traceback": redact_text(outcome.trace)},
                )
            return
        policy = action.step.retry
        elapsed = (now - (row.first_attempt_at or now)).total_seconds()
        past_deadline = policy.deadline is not None and elapsed > policy.deadline
        if error is None and isinstance(outcome.value, Wait):
            wait = outcome.value
            if past_deadline:
                error = PermanentError(
                    f"{name} gave up after {policy.deadline:.0f}s waiting: {wait.reason}"
                )
            else:
                reason = redact_text(wait.reason)[:500]
                row.status = "waiting"
                row.due_at = now + timedelta(seconds=max(0.0, wait.seconds))
                row.state = {**row.state, **wait.state}
                if wait.watch is not None:  # a fresh watch: forget what an old one found
                    row.state = {k: v for k, v in row.state.items() if k != "watched"}
                    rows.watches.append((name, wait.watch))
                if row.wait_reason != reason:
                    rows.note("step.waiting", name, reason)
                row.wait_reason = reason
                job.progress_message = reason
                return
        if error is None:
            row.status = "succeeded"
            row.output = outcome.value
            row.error = None
            row.due_at = None
            row.wait_reason = None
            row.finished_at = now
            job.progress_done += 1
            rows.note("step.succeeded", name, f"{name} succeeded")
            return
        row.attempts += 1
        info = error_info(error, name, row.attempts)
        row.error = info
        permanent = isinstance(error, PermanentError) or past_deadline
        if not permanent and row.attempts < policy.attempts:
            retry_after = getattr(error, "retry_after", None)
            delay = retry_after if retry_after is not None else policy.delay(row.attempts)
            row.status = "waiting"
            row.due_at = now + timedelta(seconds=delay)
            row.wait_reason = (
                f"retry {row.attempts + 1}/{policy.attempts} in {delay:.1f}s after "
                f"{info['type']}: {info['message']}"
            )[:500]
            job.progress_message = row.wait_reason
            rows.note(
                "step.retrying",
                name,
                row.wait_reason,
                {"traceback": redact_text(outcome.trace)},
            )
            return
        row.status = "failed"
        row.finished_at = now
        row.wait_reason = None
        job.error = info
        rows.note(
            "step.failed",
            name,
            info["message"],
            {"traceback": redact_text(outcome.trace)},
        )


def error_info(error: BaseException, step: str | None, attempt: int) -> dict[str, Any]:
    """A job's or step's ``error`` field: type, message (credentials masked), step, attempt."""
    message = error.message if isinstance(error, ProdinfError) else str(error)
    info: dict[str, Any] = {
        "type": type(error).__name__,
        "message": redact_text(message or type(error).__name__)[:2000],
        "step": step,
        "attempt": attempt,
        "transient": not isinstance(error, PermanentError),
    }
    if isinstance(error, ProdinfError) and error.details:
        info["details"] = redact(error.details)
    return info


def _require_json(value: Any, what: str) -> None:
    """Raise ``PermanentError`` unless ``value`` is JSON (NaN and infinities are not)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise PermanentError(f"{what}: {exc}") from None


def _checked(outcome: _Outcome, step: str, *, stored: bool) -> _Outcome:
    """``outcome``, or a permanent failure if what it would store is not JSON.

    ``stored``: the value is an output or a wait (a revert's return value is not kept).
    """
    try:
        _require_json(outcome.state, f"step {step} kept a non-JSON state")
    except PermanentError as exc:  # keep the state last stored
        return _Outcome(error=exc, trace=traceback.format_exc(), state=None)
    if not stored or outcome.error is not None:
        return outcome
    try:
        if isinstance(outcome.value, Wait):
            _require_json(outcome.value.state, f"step {step} waits with a non-JSON state")
        else:
            _require_json(outcome.value, f"step {step} returned a non-JSON output")
    except PermanentError as exc:
        return _Outcome(error=exc, trace=traceback.format_exc(), state=outcome.state)
    return outcome


def _stop(steps: list[LockedStep], statuses: tuple[str, ...]) -> None:
    """Mark the ``steps`` in ``statuses`` cancelled: nothing of an ended job waits or runs."""
    for step in steps:
        if step.status in statuses:
            step.status = "cancelled"
            step.due_at = None
            step.wait_reason = None
            step.lease_owner = None
            step.lease_until = None


def _holds(conn: Connection, job_id: str, step: str, owner: str) -> bool:
    """True while ``owner`` holds the lease on ``step`` of ``job_id``."""
    held = conn.scalar(
        select(StepRow.id).where(
            StepRow.job_id == job_id, StepRow.name == step, StepRow.lease_owner == owner
        )
    )
    return held is not None


class _Hooks:
    """What a ``StepContext`` may write while its step runs (only while it holds the lease)."""

    def __init__(self, store: JobStore, job_id: str, step: str, owner: str) -> None:
        self.store, self.job_id, self.step, self.owner = store, job_id, step, owner

    def save_state(self, state: dict[str, Any]) -> None:
        _require_json(state, f"step {self.step} recorded a non-JSON state")
        with self.store.transaction() as conn:
            conn.execute(
                update(StepRow)
                .where(
                    StepRow.job_id == self.job_id,
                    StepRow.name == self.step,
                    StepRow.lease_owner == self.owner,
                )
                .values(state=json.loads(json.dumps(state)))
            )

    def progress(self, message: str) -> None:
        with self.store.transaction() as conn:
            # The job row first, then the step: the order Runner locks them in.
            job = conn.scalar(select(JobRow.id).where(JobRow.id == self.job_id).with_for_update())
            if job is None or not _holds(conn, self.job_id, self.step, self.owner):
                return  # the lease passed to another worker: what it shows is not ours
            conn.execute(
                update(JobRow)
                .where(JobRow.id == self.job_id)
                .values(progress_message=redact_text(message)[:500], updated_at=utcnow())
            )

    def cancel_requested(self) -> bool:
        with self.store.transaction() as conn:
            flag = conn.scalar(select(JobRow.cancel_requested).where(JobRow.id == self.job_id))
            return bool(flag)
