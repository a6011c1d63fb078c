"""Events: recorded with the job that handles them, in one transaction; read back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select

from prodinf.store.models import EVENTS, JOBS
from prodinf.store.repository import JobStore
from prodinf.store.rows import NewRows, insert_rows

__all__ = ["delete_event", "event_by_key", "get_event", "insert_event", "list_events"]


def insert_event(store: JobStore, event: dict[str, Any], job: NewRows) -> None:
    """Insert ``event`` and the job that handles it in one transaction.

    ``IntegrityError`` passes through when the event's idempotency key is taken.
    """
    with store.transaction() as conn:
        job.insert(conn)
        insert_rows(conn, EVENTS, [{**event, "job_id": job.id}])


def delete_event(store: JobStore, event_id: str) -> None:
    """Remove an event whose job could not be sent (the job is removed by the caller)."""
    with store.transaction() as conn:
        conn.execute(delete(EVENTS).where(EVENTS.c.id == event_id))


def _columns() -> list[Any]:
    return [*EVENTS.c, JOBS.c.status.label("status")]


def _shown(row: Any) -> dict[str, Any]:
    found = dict(row._mapping)
    created: datetime = found["created_at"]
    found["created_at"] = created.isoformat()
    return found


def get_event(store: JobStore, event_id: str) -> dict[str, Any] | None:
    """The event ``event_id`` with its job's ``status``, or ``None``."""
    with store.transaction() as conn:
        row = conn.execute(
            select(*_columns())
            .select_from(EVENTS.outerjoin(JOBS, JOBS.c.id == EVENTS.c.job_id))
            .where(EVENTS.c.id == event_id)
        ).first()
    return None if row is None else _shown(row)


def event_by_key(store: JobStore, key: str) -> dict[str, Any] | None:
    """The event recorded with idempotency key ``key``, or ``None``."""
    with store.transaction() as conn:
        found = conn.scalar(select(EVENTS.c.id).where(EVENTS.c.idempotency_key == key))
    return None if found is None else get_event(store, str(found))


def list_events(
    store: JobStore,
    *,
    type: str | None = None,
    dataset: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Events, newest first, filtered by ``type``, ``dataset`` and their job's ``status``;
    and how many match in all."""
    joined = EVENTS.outerjoin(JOBS, JOBS.c.id == EVENTS.c.job_id)
    conditions = []
    if type is not None:
        conditions.append(EVENTS.c.type == type)
    if dataset is not None:
        conditions.append(EVENTS.c.dataset == dataset)
    if status is not None:
        conditions.append(JOBS.c.status == status)
    with store.transaction() as conn:
        total = conn.scalar(select(func.count()).select_from(joined).where(*conditions)) or 0
        rows = conn.execute(
            select(*_columns())
            .select_from(joined)
            .where(*conditions)
            .order_by(EVENTS.c.created_at.desc(), EVENTS.c.id)
            .limit(limit)
            .offset(offset)
        ).all()
    return [_shown(r) for r in rows], int(total)
