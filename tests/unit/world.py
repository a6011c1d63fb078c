"""The world an engine test runs in: a migrated SQLite store, a fresh registry, a
recording publish and a runner (see tests/unit/test_engine.py for how it is used)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from prodinf import Flow, Step
from prodinf.config import Settings
from prodinf.engine.registry import Registry, job_kind
from prodinf.engine.runner import Runner
from prodinf.engine.service import Jobs
from prodinf.store import JobRow, JobStore, StepRow, upgrade
from prodinf.store.types import utcnow

__all__ = ["World"]


class World:
    """A migrated SQLite store, a fresh registry, a recording publish, a runner."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = JobStore(settings.store_url)
        upgrade(self.store)
        self.registry = Registry()
        self.published: list[tuple[str, str]] = []
        self.finished: list[tuple[str, str]] = []
        self.jobs = Jobs(self.store, self.registry, settings, self.publish)
        self.runner = self.new_runner()

    def publish(self, job_id: str, queue: str) -> None:
        self.published.append((job_id, queue))

    def new_runner(self, settings: Settings | None = None) -> Runner:
        return Runner(
            self.store,
            self.registry,
            settings or self.settings,
            self.publish,
            on_finished=lambda job_id, status: self.finished.append((job_id, status)),
        )

    def kind(self, name: str, **kw: Any) -> Callable[[Callable[[Any], Flow]], Any]:
        return job_kind(name, into=self.registry, **kw)

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

    def describe(self, job_id: str) -> dict[str, Any]:
        return self.store.describe(job_id)

    def step(self, job_id: str, name: str) -> dict[str, Any]:
        return next(s for s in self.describe(job_id)["steps"] if s["name"] == name)

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
                .where(StepRow.job_id == job_id, StepRow.status == "waiting")
                .values(due_at=past)
            )
            session.execute(update(JobRow).where(JobRow.id == job_id).values(next_run_at=past))

    def close(self) -> None:
        self.store.dispose()
