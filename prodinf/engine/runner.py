"""Drives a job: claims its next step, runs it, records the outcome, and goes on.

Every transition is committed before anything else happens (a message, the
next step), and a step is held under a lease that a heartbeat renews: if its
worker dies, the lease runs out and the step is claimable again, by a
redelivered message or by the reconciler.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from pydantic import BaseModel
from sqlalchemy.engine import Connection

from prodinf import metrics
from prodinf.config import Settings
from prodinf.engine import lifecycle
from prodinf.engine.context import StepContext
from prodinf.engine.heartbeat import Heartbeat, Lease
from prodinf.engine.lifecycle import Lifecycle
from prodinf.engine.messages import Messages, Publish, lane
from prodinf.engine.newjob import new_job
from prodinf.engine.outcomes import Outcome, checked, error_info, require_json, writes_more
from prodinf.engine.planner import Claim, Finish, Idle, plan
from prodinf.engine.registry import Kind, Registry
from prodinf.engine.steplog import capturing
from prodinf.engine.steps import Flow, Step
from prodinf.engine.waits import Child, Commit, Wait
from prodinf.exceptions import PermanentError, ProdinfError, UnknownKind
from prodinf.redact import redact_text, secret_values
from prodinf.status import HELD, TERMINAL, JobStatus, StepStatus
from prodinf.store import JobStore
from prodinf.store import leases as held
from prodinf.store.children import (
    EACH,
    LAST,
    WAKE,
    ChildJob,
    child_key,
    children_of,
    wake_step,
)
from prodinf.store.rows import JobRows, LockedJob, LockedStep
from prodinf.store.types import utcnow

__all__ = ["Publish", "Runner", "error_info"]

log = logging.getLogger(__name__)

#: Longest name of a child job within its step (its idempotency key must fit 200).
MAX_CHILD_NAME = 60
#: How a run that failed and will run again came out (the others: its step's status).
RETRIED = "retried"


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
        self.messages = Messages(store, publish, settings)
        self.on_finished = on_finished
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.heartbeat = Heartbeat(store, self.lease)
        self.lifecycle = Lifecycle(registry, settings)

    def drive(self, job_id: str) -> None:
        """Advance ``job_id`` as far as it goes now; return when it waits, ends or is busy."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        built: dict[str, _Built] = {}  # a job's params never change: build its flow once
        read = JobRows.read(self.store, job_id, self.settings.resend_after)
        ahead = None if read is None else self._ahead(read, owner, built)
        rows: JobRows | None
        action: _Action | str | None
        if ahead is not None:
            rows, action = ahead
        else:
            with self.store.transaction() as conn:
                rows = JobRows.lock(conn, job_id, self.settings.resend_after)
                action = self._advance(rows, owner, built)
                if rows is not None:
                    rows.save(conn)
            if rows is not None:
                self._publish_spawned(rows)
        while isinstance(action, _Action):
            if action.fanout:
                self._fan_out(action)
            outcome = self._run(action, owner)
            mine = None if rows is None else rows.resumed()
            ahead = None if mine is None else self._ahead(mine, owner, built, (action, outcome))
            if ahead is not None:
                rows, action = ahead
                continue
            # One transaction records the outcome and claims the next step: it
            # reads the rows once and writes what changed once.
            with self.store.transaction() as conn:
                rows = JobRows.lock(conn, job_id, self.settings.resend_after)
                if rows is None:
                    log.warning("job %s: gone while %s ran", job_id, action.step.name)
                    return
                if writes_more(outcome):  # rows of its own: this runner's are not all known
                    rows.versions = None
                came_out = self._record(conn, rows, action, owner, outcome)
                if came_out is not None:
                    ran = (rows.job.kind, action.step.name, came_out, outcome.seconds)
                    rows.on_commit.append(partial(metrics.step_ran, *ran))
                action = self._advance(rows, owner, built)
                rows.save(conn)
            self._publish_spawned(rows)
        if isinstance(action, str) and self.on_finished is not None:
            self.on_finished(job_id, action)

    def _ahead(
        self,
        rows: JobRows,
        owner: str,
        built: dict[str, _Built],
        ran: tuple[_Action, Outcome] | None = None,
    ) -> tuple[JobRows, _Action | str | None] | None:
        """Record how the ``ran`` action came out (if any) and claim the next step on
        ``rows`` as they were read or as this runner's last transaction left them,
        written in one statement that commits on its own (PostgreSQL: a quarter of the
        round trips of a transaction that locks and reads them first). ``None`` when
        that cannot be: a row was written since (a heartbeat, a cancel, a wake), or the
        transition writes more than the job's rows (new jobs, watches, the job's end);
        the caller then locks and reads them as ever."""
        if ran is not None:
            action, outcome = ran
            if writes_more(outcome):
                return None
            came_out = self._record(None, rows, action, owner, outcome)
            if came_out is None:
                return None
            counted = (rows.job.kind, action.step.name, came_out, outcome.seconds)
            rows.on_commit.append(partial(metrics.step_ran, *counted))
        after = self._advance(rows, owner, built)
        if isinstance(after, str) or rows.job.status in TERMINAL:
            return None
        if rows.spawned or rows.watches or rows.woken:
            return None
        if not rows.save_unless_changed(self.store):
            return None
        return rows, after

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
            message = exc.message
            if isinstance(exc, UnknownKind):
                message = (
                    f"this worker ({socket.gethostname()}, queue {job.queue}) has no kind "
                    f"{job.kind!r}: start the workers of queue {job.queue} with the plugin "
                    "that registers it (PRODINF_PLUGINS), then retry the job"
                )
            job.error = {"type": type(exc).__name__, "message": message, "step": None}
            self.lifecycle.finish(rows, JobStatus.FAILED, now)
            return JobStatus.FAILED
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
        row = decision.step
        lifecycle.claim(
            rows, row, revert=decision.revert, owner=owner, until=now + self.lease, now=now
        )
        return _Action(
            job_id=rows.job.id,
            kind=b.kind,
            params=b.params,
            flow=b.flow,
            step=b.flow.by_name[row.name],
            revert=decision.revert,
            fanout=decision.fanout,
            queue=rows.job.queue,
            attempt=row.attempts + 1,
            outputs={s.name: s.output for s in rows.steps if s.status == StepStatus.SUCCEEDED},
            state=dict(row.state or {}),
            output=row.output,
        )

    def _finish(self, rows: JobRows, b: _Built, status: JobStatus, now: datetime) -> str:
        result = None
        if status == JobStatus.SUCCEEDED:
            outputs = {s.name: s.output for s in rows.steps}
            if b.kind.result is not None:
                result = b.kind.result(outputs)
            else:
                sinks = b.flow.sinks()
                result = (
                    outputs[sinks[-1]]
                    if len(sinks) == 1
                    else {name: outputs[name] for name in sinks}
                )
        self.lifecycle.finish(rows, status, now, result=result)
        return status

    def _publish_spawned(self, rows: JobRows) -> None:
        # Committed with the job's status: a message not confirmed sent is sent by the
        # reconciler at its job's next_run_at (resend_after from now). A woken parent
        # goes on its queue's lane, beside work already under way, not behind new work.
        self.messages.send_all(
            [(new.id, new.queue, new.next_run_at) for new in rows.spawned]
            + [(parent, lane(queue), None) for parent, queue, _ in rows.woken]
        )
        rows.spawned, rows.woken = [], []

    # -- running -------------------------------------------------------------

    def _fan_out(self, action: _Action) -> None:
        # Another ready step can run in parallel on another worker. If this
        # publish fails, nothing is lost: this worker takes it after its step.
        try:
            self.publish(action.job_id, action.queue)
        except ProdinfError as exc:
            log.warning("could not fan out job %s: %s", action.job_id, exc)

    def _run(self, action: _Action, owner: str) -> Outcome:
        hooks = _Hooks(self.store, Lease(action.job_id, action.step.name, owner))
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
            registry=self.registry,
        )
        lease = Lease(action.job_id, action.step.name, owner)
        secrets = secret_values(action.params.model_dump())
        self.heartbeat.hold(lease)
        started = time.monotonic()
        try:
            tag = {"kind": action.kind.name, "queue": action.queue}  # what its log lines carry
            with capturing(self.store, *lease[:2], action.attempt, secrets=secrets, **tag):
                fn = action.step.revert if action.revert else action.step.execute
                assert fn is not None  # the planner only reverts steps that have a revert
                outcome = Outcome(value=fn(ctx), state=ctx.state)
        except Exception as exc:
            outcome = Outcome(error=exc, trace=traceback.format_exc(), state=ctx.state)
        finally:
            self.heartbeat.release(lease)
        kept = checked(outcome, action.step.name, stored=not action.revert)
        kept.seconds = time.monotonic() - started
        return kept

    def _record(
        self,
        conn: Connection | None,
        rows: JobRows,
        action: _Action,
        owner: str,
        outcome: Outcome,
    ) -> str | None:
        """Record the run's ``outcome``; how it came out (``prodinf_steps_total``'s
        ``outcome``), or ``None`` when it is discarded (its lease lost). ``conn`` is the
        transaction's: ``None`` only for an outcome that writes nothing of its own
        (see ``_writes_more``)."""
        job = rows.job
        row = next((s for s in rows.steps if s.name == action.step.name), None)
        if row is None or row.lease_owner != owner or row.status not in HELD:
            log.warning("job %s step %s: lease lost; outcome discarded", job.id, action.step.name)
            return None
        now = utcnow()
        name = row.name
        if outcome.state is not None:
            row.state = outcome.state
        error = outcome.error
        trace = redact_text(outcome.trace)
        if action.revert:
            if error is None:
                lifecycle.undone(rows, row, now)
                return StepStatus.REVERTED
            info = error_info(error, name, action.attempt)
            lifecycle.undo_failed(rows, row, info, trace, now)
            return StepStatus.REVERT_FAILED
        policy = action.step.retry
        elapsed = (now - (row.first_attempt_at or now)).total_seconds()
        past_deadline = policy.deadline is not None and elapsed > policy.deadline
        if error is None and isinstance(outcome.value, Wait) and outcome.value.children:
            assert conn is not None
            try:
                if self._start_children(conn, rows, row, outcome.value.children, now):
                    # every child has ended already: run the step again at once
                    outcome = Outcome(value=replace(outcome.value, seconds=0.0), state=None)
            except ProdinfError as exc:
                error = PermanentError(f"{name} could not start its jobs: {exc.message}")
        if error is None and isinstance(outcome.value, Commit):
            assert conn is not None
            rows.spawned.extend(outcome.value.write(conn, now))
            due = now + timedelta(seconds=self.settings.resend_after)
            for job_id, step in outcome.value.wake(conn, now) if outcome.value.wake else ():
                queue = wake_step(conn, job_id, step, now, due)
                if queue is not None:
                    rows.woken.append((job_id, queue, due))
            outcome = Outcome(value=outcome.value.output, state=outcome.state)
        if error is None and isinstance(outcome.value, Wait) and row.due_at is not None:
            # woken while it ran (a child ended, a callback came): what it looked at
            # may be stale, so it runs again at once
            outcome = Outcome(value=replace(outcome.value, seconds=0.0), state=outcome.state)
        if error is None and isinstance(outcome.value, Wait):
            wait = outcome.value
            if not past_deadline:
                lifecycle.wait(
                    rows,
                    row,
                    until=now + timedelta(seconds=max(0.0, wait.seconds)),
                    reason=redact_text(wait.reason)[:500],
                    state={**wait.state, WAKE: LAST if wait.last else EACH}
                    if wait.children
                    else wait.state,
                    watch=wait.watch,
                    now=now,
                )
                return StepStatus.WAITING
            error = PermanentError(
                f"{name} gave up after {policy.deadline:.0f}s waiting: {wait.reason}"
            )
        if error is None:
            lifecycle.succeed(rows, row, outcome.value, now)
            return StepStatus.SUCCEEDED
        row.attempts += 1
        info = error_info(error, name, row.attempts)
        permanent = isinstance(error, PermanentError) or past_deadline
        if not permanent and row.attempts < policy.attempts:
            retry_after = getattr(error, "retry_after", None)
            delay = retry_after if retry_after is not None else policy.delay(row.attempts)
            reason = (
                f"retry {row.attempts + 1}/{policy.attempts} in {delay:.1f}s after "
                f"{info['type']}: {info['message']}"
            )
            lifecycle.retry_later(
                rows,
                row,
                until=now + timedelta(seconds=delay),
                reason=reason,
                error=info,
                trace=trace,
                now=now,
            )
            return RETRIED
        lifecycle.fail(rows, row, info, trace, now)
        return StepStatus.FAILED

    def _start_children(
        self,
        conn: Connection,
        rows: JobRows,
        row: LockedStep,
        children: tuple[Child, ...],
        now: datetime,
    ) -> bool:
        """Add the ``children`` not started yet to the rows this transaction writes;
        return whether every one of them has ended already."""
        job = rows.job
        started = children_of(conn, job.id, row.name)
        for child in children:
            if child.name in started:
                continue
            if not 0 < len(child.name) <= MAX_CHILD_NAME:
                raise PermanentError(f"child name must be 1 to {MAX_CHILD_NAME} characters")
            spec = self.registry.get(child.kind)
            params = spec.validate(child.params)
            new = new_job(
                spec,
                params.model_dump(mode="json"),
                spec.flow(params),
                self.settings,
                now,
                idempotency_key=child_key(job.id, row.name, child.name),
                submitted_by=f"job {job.id}",
                parent=(job.id, row.name),
                queue=child.queue,
            )
            rows.spawned.append(new)
            rows.note(
                "child.started", row.name, f"started {child.kind} job {new.id} as {child.name}"
            )
        return all(
            child.name in started and started[child.name].status in TERMINAL for child in children
        )


class _Hooks:
    """What a ``StepContext`` may write while its step runs (only while it holds the lease)."""

    def __init__(self, store: JobStore, lease: Lease) -> None:
        self.store, self.lease = store, lease

    def save_state(self, state: dict[str, Any]) -> None:
        require_json(state, f"step {self.lease.step} recorded a non-JSON state")
        held.save_state(self.store, *self.lease, state)

    def progress(self, message: str) -> None:
        held.show_progress(self.store, *self.lease, redact_text(message)[:500])

    def cancel_requested(self) -> bool:
        return held.cancel_requested(self.store, self.lease.job_id)

    def children(self, of: str | None = None) -> dict[str, ChildJob]:
        with self.store.transaction() as conn:
            return children_of(conn, of or self.lease.job_id, self.lease.step)

    def transaction(self) -> AbstractContextManager[Connection]:
        return self.store.transaction()
