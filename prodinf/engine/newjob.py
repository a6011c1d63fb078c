"""The rows of a new job: what a submission writes, and what a finishing job writes for
the notification it asks for (in the same transaction, so neither can be lost)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from prodinf.config import Settings
from prodinf.engine.registry import Kind
from prodinf.engine.rows import HISTORY, JOBS, STEPS, insert_rows
from prodinf.engine.steps import Flow
from prodinf.store.repository import history_entry

__all__ = ["NewJob"]


@dataclass(frozen=True)
class NewJob:
    """A job row, its step rows and its ``job.submitted`` event, ready to insert."""

    values: dict[str, Any]
    steps: list[dict[str, Any]]
    history: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.values["id"])

    @property
    def queue(self) -> str:
        return str(self.values["queue"])

    @classmethod
    def build(
        cls,
        kind: Kind[Any],
        params: dict[str, Any],
        flow: Flow,
        settings: Settings,
        now: datetime,
        *,
        idempotency_key: str | None = None,
        submitted_by: str | None = None,
        notify: dict[str, Any] | None = None,
    ) -> NewJob:
        """The rows of a queued ``kind`` job with validated, JSON-ready ``params``.

        Its ``next_run_at`` is ``redrive_after`` from now: if its message never
        reaches a worker, the reconciler publishes it again then.
        """
        job_id = str(uuid.uuid4())
        values: dict[str, Any] = {
            "id": job_id,
            "kind": kind.name,
            "queue": settings.queue_for(kind.queue),
            "status": "queued",
            "params": params,
            "progress_done": 0,
            "progress_total": len(flow.steps),
            "progress_message": "queued",
            "submitted_by": submitted_by,
            "idempotency_key": idempotency_key,
            "notify": notify,
            "cancel_requested": False,
            "created_at": now,
            "updated_at": now,
            "next_run_at": now + timedelta(seconds=settings.redrive_after),
        }
        steps = [
            {
                "job_id": job_id,
                "name": step.name,
                "position": position,
                "after": list(flow.deps[step.name]),
                "status": "pending",
                "attempts": 0,
                "state": {},
            }
            for position, step in enumerate(flow.steps)
        ]
        submitted = f"submitted {kind.name}" + (f" by {submitted_by}" if submitted_by else "")
        return cls(values, steps, history_entry(job_id, "job.submitted", None, submitted))

    def insert(self, conn: Connection) -> None:
        """Insert the rows: Core statements, one per table (the ORM's unit of work
        would cost more than the rest of a submission)."""
        insert_rows(conn, JOBS, [self.values])
        insert_rows(conn, STEPS, self.steps)
        insert_rows(conn, HISTORY, [self.history])
