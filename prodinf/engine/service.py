"""Submitting, cancelling and retrying jobs: what the API, the web form and the CLI call."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from prodinf.config import Settings
from prodinf.engine.registry import Registry
from prodinf.engine.runner import Publish
from prodinf.exceptions import BrokerUnavailable, Conflict, NotFound, ValidationError
from prodinf.store import TERMINAL, JobRow, JobStore, StepRow, add_history, job_summary
from prodinf.store.types import utcnow

__all__ = ["Jobs"]

MAX_KEY_LENGTH = 200


class Jobs:
    """The operations on jobs that change them, each one transaction then one message."""

    def __init__(
        self, store: JobStore, registry: Registry, settings: Settings, publish: Publish
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.publish = publish

    def queue_of(self, kind: str) -> str:
        logical = self.registry.get(kind).queue
        return self.settings.queues.get(logical, logical)

    def submit(
        self,
        kind: str,
        params: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        submitted_by: str | None = None,
        notify: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Store a new job and publish its message; return (job summary, created).

        With an ``idempotency_key`` already used, returns that job and ``False``.
        If the broker does not take the message, the job is removed again and
        ``BrokerUnavailable`` raised: a job is stored only if its message is sent.
        """
        if not isinstance(kind, str) or not kind:
            raise ValidationError("kind is required", field="kind")
        spec = self.registry.get(kind)
        validated = spec.validate(params)
        flow = spec.flow(validated)
        if idempotency_key is not None:
            if (
                not isinstance(idempotency_key, str)
                or not 0 < len(idempotency_key) <= MAX_KEY_LENGTH
            ):
                raise ValidationError(
                    f"idempotency_key must be a string of 1 to {MAX_KEY_LENGTH} characters",
                    field="idempotency_key",
                )
            existing = self._by_key(idempotency_key, kind)
            if existing is not None:
                return existing, False
        now = utcnow()
        job = JobRow(
            id=str(uuid.uuid4()),
            kind=kind,
            queue=self.queue_of(kind),
            status="queued",
            params=validated.model_dump(mode="json"),
            progress_done=0,
            progress_total=len(flow.steps),
            progress_message="queued",
            submitted_by=submitted_by,
            idempotency_key=idempotency_key,
            notify=notify,
            cancel_requested=False,
            created_at=now,
            updated_at=now,
            next_run_at=now + timedelta(seconds=self.settings.redrive_after),
        )
        try:
            with self.store.session() as session:
                session.add(job)
                session.flush()
                for position, step in enumerate(flow.steps):
                    session.add(
                        StepRow(
                            job_id=job.id,
                            name=step.name,
                            position=position,
                            after=list(flow.deps[step.name]),
                            status="pending",
                            attempts=0,
                            state={},
                        )
                    )
                add_history(
                    session,
                    job.id,
                    "job.submitted",
                    None,
                    f"submitted {kind}" + (f" by {submitted_by}" if submitted_by else ""),
                )
        except IntegrityError:
            if idempotency_key is None:
                raise
            existing = self._by_key(idempotency_key, kind)  # lost a race for the same key
            if existing is None:
                raise
            return existing, False
        try:
            self.publish(job.id, job.queue)
        except BrokerUnavailable:
            with self.store.session() as session:
                session.execute(delete(JobRow).where(JobRow.id == job.id))
            raise
        return job_summary(job), True

    def _by_key(self, key: str, kind: str) -> dict[str, Any] | None:
        with self.store.session() as session:
            job = session.scalars(select(JobRow).where(JobRow.idempotency_key == key)).first()
            if job is None:
                return None
            if job.kind != kind:
                raise Conflict(
                    f"idempotency_key {key!r} was used for a {job.kind} job",
                    field="idempotency_key",
                )
            return job_summary(job)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or waiting job now; a running one stops after its current step."""
        with self.store.session() as session:
            job = self._locked(session, job_id)
            if job.status in TERMINAL:
                raise Conflict(f"job {job_id} has already {job.status}", field="id")
            job.cancel_requested = True
            now = utcnow()
            job.updated_at = now
            running = session.scalars(
                select(StepRow).where(
                    StepRow.job_id == job_id, StepRow.status.in_(("running", "reverting"))
                )
            ).first()
            if running is None:
                for step in session.scalars(select(StepRow).where(StepRow.job_id == job_id)):
                    if step.status in ("pending", "waiting"):
                        step.status = "cancelled"
                        step.due_at = None
                job.status = "cancelled"
                job.finished_at = now
                job.next_run_at = None
                job.progress_message = "cancelled"
                add_history(session, job_id, "job.cancelled", None, "cancelled")
            else:
                add_history(
                    session,
                    job_id,
                    "job.cancel_requested",
                    None,
                    f"cancel requested; stopping after {running.name}",
                )
            return job_summary(job)

    def retry(self, job_id: str) -> dict[str, Any]:
        """Run a failed, reverted or cancelled job again from where it stopped.

        Steps that succeeded (and were not reverted) keep their outputs and do
        not run again; failed, reverted and cancelled steps start afresh.
        """
        with self.store.session() as session:
            job = self._locked(session, job_id)
            if job.status not in ("failed", "reverted", "cancelled"):
                raise Conflict(
                    f"job {job_id} is {job.status}; only a failed, reverted or "
                    "cancelled job can be retried",
                    field="id",
                )
            now = utcnow()
            again = []
            for step in session.scalars(select(StepRow).where(StepRow.job_id == job_id)):
                if step.status != "succeeded":
                    if step.status != "pending":
                        again.append(step.name)
                    step.status = "pending"
                    step.attempts = 0
                    step.error = None
                    step.due_at = None
                    step.wait_reason = None
                    step.first_attempt_at = None
                    step.finished_at = None
                    step.output = None
                    step.state = {}
            job.status = "queued"
            job.cancel_requested = False
            job.error = None
            job.result = None
            job.finished_at = None
            job.updated_at = now
            job.progress_message = "queued for retry"
            job.next_run_at = now + timedelta(seconds=self.settings.redrive_after)
            add_history(
                session,
                job_id,
                "job.retried",
                None,
                "retrying " + (", ".join(again) or "remaining steps"),
            )
            summary = job_summary(job)
            queue = job.queue
        # If this publish fails the job is queued in the store and the
        # reconciler publishes it after redrive_after; the caller is told.
        self.publish(job_id, queue)
        return summary

    @staticmethod
    def _locked(session: Any, job_id: str) -> JobRow:
        job: JobRow | None = session.scalars(
            select(JobRow).where(JobRow.id == job_id).with_for_update()
        ).first()
        if job is None:
            raise NotFound(f"no job {job_id!r}", field="id")
        return job
