"""The world an engine test runs in: a migrated store, a fresh registry, the engine on both.

The unit tier builds it on SQLite under the test's home (``tests/unit/conftest.py``);
the contract tier passes a fresh store on each backend (``tests/contract/conftest.py``).
Each test registers small kinds, submits through ``jobs`` and drives with ``runner``
as a worker's task would. Time passes by moving due times into the past, which is
exactly what the clock would have done.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from prodinf import Flow, Step
from prodinf.config import Settings
from prodinf.engine.reconciler import reconcile
from prodinf.engine.registry import Registry, job_kind
from prodinf.engine.runner import Publish, Runner
from prodinf.engine.service import Jobs
from prodinf.status import StepStatus
from prodinf.store import JobRow, JobStore, StepRow, upgrade
from prodinf.store.types import utcnow

__all__ = ["World"]


class World:
    """A migrated store, a fresh registry, ``jobs`` to submit and ``runner`` to drive.

    ``publish`` is where run messages go. Unless a test passes one, it records
    (job id, queue) in ``published``: the engine is tested through its publish
    seam, and a test reads what would have been sent. The broker behind the seam
    is tested for real elsewhere: the embedded broker through prodinf's own
    ``Runtime`` (``tests/broker.py``; tests/unit/test_embedded_broker.py,
    tests/unit/test_reconciler.py, and the broker tests in
    tests/unit/test_service.py and tests/unit/test_notices.py) and RabbitMQ in
    tests/integration.
    """

    def __init__(
        self, settings: Settings, *, store: JobStore | None = None, publish: Publish | None = None
    ) -> None:
        self.settings = settings
        self._owns_store = store is None
        if store is None:
            store = JobStore(settings.store_url)
            upgrade(store)
        self.store = store
        self.registry = Registry()
        self.published: list[tuple[str, str]] = []
        self.finished: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.publish: Publish = publish or self._record
        self.jobs = self.new_jobs()
        self.runner = self.new_runner()

    def _record(self, job_id: str, queue: str) -> None:
        with self._lock:
            self.published.append((job_id, queue))

    def new_jobs(self, settings: Settings | None = None) -> Jobs:
        return Jobs(self.store, self.registry, settings or self.settings, self.publish)

    def new_runner(
        self, settings: Settings | None = None, *, store: JobStore | None = None
    ) -> Runner:
        """Another worker: its own runner (and lease owner), on ``store`` if given."""
        return Runner(
            store or self.store,
            self.registry,
            settings or self.settings,
            self.publish,
            on_finished=lambda job_id, status: self.finished.append((job_id, status)),
        )

    def linear(self, name: str, *steps: Step, **kw: Any) -> None:
        """Register kind ``name`` whose flow is ``steps`` in order."""
        job_kind(name, into=self.registry, **kw)(lambda _params: Flow.of(*steps))

    def submit(self, kind: str, params: dict[str, Any] | None = None, **kw: Any) -> str:
        summary, created = self.jobs.submit(kind, params, **kw)
        assert created
        return str(summary["id"])

    def drive(self, job_id: str, runner: Runner | None = None) -> dict[str, Any]:
        (runner or self.runner).drive(job_id)
        return self.describe(job_id)

    def reconcile(
        self,
        queues: Collection[str] | None = None,
        redrive_after: float = 30.0,
        resend_after: float = 10.0,
        limit: int = 200,
    ) -> int:
        """What the scheduler does: publish every due job (on ``queues``, or all)."""
        return reconcile(
            self.store,
            self.publish,
            resend_after=resend_after,
            redrive_after=redrive_after,
            queues=queues,
            limit=limit,
        )

    def describe(self, job_id: str) -> dict[str, Any]:
        return self.store.describe(job_id)

    def step(self, job_id: str, name: str) -> dict[str, Any]:
        return next(s for s in self.describe(job_id)["steps"] if s["name"] == name)

    def steps(self, job_id: str) -> dict[str, str]:
        """Each step's status, by name."""
        return {s["name"]: s["status"] for s in self.describe(job_id)["steps"]}

    def lease_until(self, job_id: str, step: str) -> datetime | None:
        """When the lease on ``step`` runs out, as the store has it (``None``: never held)."""
        with self.store.session() as session:
            return session.scalar(
                select(StepRow.lease_until).where(StepRow.job_id == job_id, StepRow.name == step)
            )

    def events(self, job_id: str, *kinds: str) -> list[tuple[str, str | None]]:
        """(event, step) pairs of the job's history, optionally only the given events."""
        return [
            (h["event"], h["step"])
            for h in self.describe(job_id)["history"]
            if not kinds or h["event"] in kinds
        ]

    def messages(self, job_id: str, event: str) -> list[str]:
        return [h["message"] for h in self.describe(job_id)["history"] if h["event"] == event]

    def pass_time(self, job_id: str) -> None:
        """What the clock does: every waiting step of the job (and the job) becomes due."""
        past = utcnow() - timedelta(seconds=1)
        with self.store.session() as session:
            session.execute(
                update(StepRow)
                .where(StepRow.job_id == job_id, StepRow.status == StepStatus.WAITING)
                .values(due_at=past)
            )
            session.execute(update(JobRow).where(JobRow.id == job_id).values(next_run_at=past))

    def close(self) -> None:
        """Release the store's connections, if the world made the store."""
        if self._owns_store:
            self.store.dispose()
