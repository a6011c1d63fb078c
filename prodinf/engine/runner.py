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
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from prodinf.config import Settings
from prodinf.engine.context import StepContext
from prodinf.engine.planner import Claim, Finish, Idle, plan
from prodinf.engine.registry import Kind, Registry
from prodinf.engine.steps import Flow, Step, Wait
from prodinf.exceptions import PermanentError, ProdinfError, StoreUnavailable, TransientError
from prodinf.redact import redact, redact_text
from prodinf.store import TERMINAL, JobRow, JobStore, StepRow, add_history
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


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None
    trace: str = ""
    state: dict[str, Any] = field(default_factory=dict)


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

    def drive(self, job_id: str) -> None:
        """Advance ``job_id`` as far as it goes now; return when it waits, ends or is busy."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        with self.store.session() as session:
            action = self._advance(session, job_id, owner)
        while isinstance(action, _Action):
            if action.fanout:
                self._fan_out(action)
            outcome = self._run(action, owner)
            with self.store.session() as session:
                self._record(session, action, owner, outcome)
                action = self._advance(session, job_id, owner)
        if isinstance(action, str) and self.on_finished is not None:
            self.on_finished(job_id, action)

    # -- deciding ------------------------------------------------------------

    def _advance(self, session: Session, job_id: str, owner: str) -> _Action | str | None:
        """Claim the job's next step, or settle its status. Returns a terminal status reached."""
        job = session.scalars(select(JobRow).where(JobRow.id == job_id).with_for_update()).first()
        if job is None or job.status in TERMINAL:
            return None
        steps = list(
            session.scalars(
                select(StepRow)
                .where(StepRow.job_id == job_id)
                .order_by(StepRow.position)
                .with_for_update()
            )
        )
        now = utcnow()
        try:
            kind = self.registry.get(job.kind)
            params = kind.validate(job.params)
            flow = kind.flow(params)
        except ProdinfError as exc:
            job.error = {"type": type(exc).__name__, "message": exc.message, "step": None}
            return self._finish(session, job, steps, None, "failed", now)
        revertible = {step.name for step in flow.steps if step.revert is not None}
        decision = plan(job, steps, revertible, now)
        if isinstance(decision, Idle):
            job.status = decision.status
            job.next_run_at = decision.next_run_at
            job.updated_at = now
            return None
        if isinstance(decision, Finish):
            return self._finish(session, job, steps, flow, decision.status, now)
        return self._claim(session, job, steps, flow, kind, params, decision, owner, now)

    def _claim(
        self,
        session: Session,
        job: JobRow,
        steps: list[StepRow],
        flow: Flow,
        kind: Kind[Any],
        params: BaseModel,
        decision: Claim,
        owner: str,
        now: datetime,
    ) -> _Action:
        row = decision.step
        if row.status in ("running", "reverting"):
            add_history(
                session,
                job.id,
                "step.resumed",
                row.name,
                f"the worker holding {row.name} stopped answering; resuming",
            )
        elif decision.revert:
            add_history(session, job.id, "step.reverting", row.name, f"reverting {row.name}")
        elif row.status == "pending":
            add_history(session, job.id, "step.started", row.name, f"started {row.name}")
        row.status = "reverting" if decision.revert else "running"
        row.lease_owner = owner
        row.lease_until = now + self.lease
        if not decision.revert:
            row.first_attempt_at = row.first_attempt_at or now
            row.started_at = row.started_at or now
        job.status = "running"
        job.started_at = job.started_at or now
        job.next_run_at = row.lease_until
        job.updated_at = now
        if row.wait_reason is None or row.status != "running":
            job.progress_message = f"{'reverting' if decision.revert else 'running'} {row.name}"
        return _Action(
            job_id=job.id,
            kind=kind,
            params=params,
            flow=flow,
            step=flow.by_name[row.name],
            revert=decision.revert,
            fanout=decision.fanout,
            queue=job.queue,
            attempt=row.attempts + 1,
            outputs={s.name: s.output for s in steps if s.status == "succeeded"},
            state=dict(row.state or {}),
            output=row.output,
        )

    def _finish(
        self,
        session: Session,
        job: JobRow,
        steps: list[StepRow],
        flow: Flow | None,
        status: str,
        now: datetime,
    ) -> str:
        if status == "succeeded" and flow is not None:
            outputs = {s.name: s.output for s in steps}
            kind = self.registry.get(job.kind)
            if kind.result is not None:
                job.result = kind.result(outputs)
            else:
                sinks = flow.sinks()
                job.result = (
                    outputs[sinks[-1]]
                    if len(sinks) == 1
                    else {name: outputs[name] for name in sinks}
                )
            message = "succeeded"
        elif status == "cancelled":
            for step in steps:
                if step.status in ("pending", "waiting"):
                    step.status = "cancelled"
                    step.due_at = None
            message = "cancelled"
        else:
            reason = (job.error or {}).get("message", "")
            message = f"{status}: {reason}"[:500]
        job.status = status
        job.progress_message = message
        job.progress_done = sum(1 for s in steps if s.status == "succeeded")
        job.finished_at = now
        job.next_run_at = None
        job.updated_at = now
        add_history(session, job.id, f"job.{status}", None, message)
        return status

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
        heartbeat = _Heartbeat(self.store, action.job_id, action.step.name, owner, self.lease)
        heartbeat.start()
        try:
            fn = action.step.revert if action.revert else action.step.execute
            assert fn is not None  # the planner only reverts steps that have a revert
            value = fn(ctx)
            if not isinstance(value, Wait):
                json.dumps(value)  # outputs must be JSON; fail here, not in the store
            return _Outcome(value=value, state=ctx.state)
        except TypeError as exc:
            if "JSON serializable" in str(exc):
                exc = PermanentError(f"step {action.step.name} returned a non-JSON output: {exc}")
            return _Outcome(error=exc, trace=traceback.format_exc(), state=ctx.state)
        except Exception as exc:
            return _Outcome(error=exc, trace=traceback.format_exc(), state=ctx.state)
        finally:
            heartbeat.stop()

    def _record(self, session: Session, action: _Action, owner: str, outcome: _Outcome) -> None:
        job = session.scalars(
            select(JobRow).where(JobRow.id == action.job_id).with_for_update()
        ).one()
        row = session.scalars(
            select(StepRow)
            .where(StepRow.job_id == action.job_id, StepRow.name == action.step.name)
            .with_for_update()
        ).one()
        if row.lease_owner != owner or row.status not in ("running", "reverting"):
            log.warning("job %s step %s: lease lost; outcome discarded", job.id, row.name)
            return
        now = utcnow()
        name = row.name
        row.lease_owner = None
        row.lease_until = None
        row.state = outcome.state
        job.updated_at = now
        error = outcome.error
        if action.revert:
            row.finished_at = now
            if error is None:
                row.status = "reverted"
                add_history(session, job.id, "step.reverted", name, f"reverted {name}")
            else:
                row.status = "revert_failed"
                row.error = error_info(error, name, action.attempt)
                add_history(
                    session,
                    job.id,
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
                row.status = "waiting"
                row.due_at = now + timedelta(seconds=max(0.0, wait.seconds))
                row.state = {**outcome.state, **wait.state}
                if row.wait_reason != wait.reason:
                    add_history(session, job.id, "step.waiting", name, wait.reason)
                row.wait_reason = wait.reason[:500]
                job.progress_message = wait.reason[:500]
                return
        if error is None:
            row.status = "succeeded"
            row.output = outcome.value
            row.error = None
            row.due_at = None
            row.wait_reason = None
            row.finished_at = now
            job.progress_done += 1
            add_history(session, job.id, "step.succeeded", name, f"{name} succeeded")
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
            add_history(
                session,
                job.id,
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
        add_history(
            session,
            job.id,
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


class _Hooks:
    """What a ``StepContext`` may write while its step runs (only while it holds the lease)."""

    def __init__(self, store: JobStore, job_id: str, step: str, owner: str) -> None:
        self.store, self.job_id, self.step, self.owner = store, job_id, step, owner

    def save_state(self, state: dict[str, Any]) -> None:
        with self.store.session() as session:
            session.execute(
                update(StepRow)
                .where(
                    StepRow.job_id == self.job_id,
                    StepRow.name == self.step,
                    StepRow.lease_owner == self.owner,
                )
                .values(state=json.loads(json.dumps(state)))
            )

    def progress(self, message: str) -> None:
        with self.store.session() as session:
            session.execute(
                update(JobRow)
                .where(JobRow.id == self.job_id)
                .values(progress_message=redact_text(message)[:500], updated_at=utcnow())
            )

    def cancel_requested(self) -> bool:
        with self.store.session() as session:
            flag = session.scalar(select(JobRow.cancel_requested).where(JobRow.id == self.job_id))
            return bool(flag)


class _Heartbeat:
    """Renews a step's lease every third of its length while the step runs."""

    def __init__(
        self, store: JobStore, job_id: str, step: str, owner: str, lease: timedelta
    ) -> None:
        self.store, self.job_id, self.step, self.owner, self.lease = (
            store,
            job_id,
            step,
            owner,
            lease,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, daemon=True, name=f"prodinf-heartbeat-{job_id[:8]}"
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease.total_seconds() / 3):
            until = utcnow() + self.lease
            try:
                with self.store.session() as session:
                    renewed = session.execute(
                        update(StepRow)
                        .where(
                            StepRow.job_id == self.job_id,
                            StepRow.name == self.step,
                            StepRow.lease_owner == self.owner,
                        )
                        .values(lease_until=until)
                    ).rowcount  # type: ignore[attr-defined]
                    if renewed:
                        session.execute(
                            update(JobRow).where(JobRow.id == self.job_id).values(next_run_at=until)
                        )
            except (StoreUnavailable, TransientError) as exc:
                log.warning("heartbeat for job %s failed: %s", self.job_id, exc)
