"""Events: recorded with the job that handles them, in one transaction; read back."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from prodinf.store.models import COALESCING, EVENTS, JOBS
from prodinf.store.repository import JobStore
from prodinf.store.rows import NewRows, insert_rows

__all__ = [
    "WindowTaken",
    "claim_window",
    "delete_event",
    "event_by_key",
    "event_exists",
    "event_job",
    "events_by_keys",
    "get_event",
    "insert_event",
    "list_events",
]


class WindowTaken(Exception):
    """Another event opened the coalescing window at the same moment: record again."""


def insert_event(
    conn: Connection, event: dict[str, Any], job: NewRows, *, insert_job: bool = True
) -> None:
    """Insert ``event`` and (unless ``insert_job`` is false: the caller's transaction
    inserts it) the job that handles it.

    ``IntegrityError`` passes through when the event's idempotency key is taken.
    """
    if insert_job:
        job.insert(conn)
    insert_rows(conn, EVENTS, [{**event, "job_id": job.id}])


def event_exists(conn: Connection, event_id: str) -> bool:
    """Whether event ``event_id`` is recorded."""
    return conn.scalar(select(EVENTS.c.id).where(EVENTS.c.id == event_id)) is not None


def event_job(conn: Connection, event_id: str) -> str:
    """The id of the job that handles event ``event_id``."""
    return str(conn.scalar(select(EVENTS.c.job_id).where(EVENTS.c.id == event_id)))


def claim_window(
    conn: Connection,
    subscription: str,
    key: str,
    event_id: str,
    now: datetime,
    window: float,
) -> tuple[str, datetime]:
    """The event whose process ``subscription`` runs for coalescing ``key`` at ``now``,
    and when its window closes: ``event_id`` itself, opening a window of ``window``
    seconds, unless another event's window for the key is still open.

    :raises IntegrityError: or :class:`WindowTaken`: another transaction opened the
        window at the same moment; run this one again.
    """
    slot = hashlib.sha256(f"{subscription}\0{key}".encode()).hexdigest()
    found = conn.execute(
        select(COALESCING.c.event_id, COALESCING.c.closes_at).where(COALESCING.c.slot == slot)
    ).first()
    closes = now + timedelta(seconds=window)
    if found is not None and found.closes_at > now:
        return str(found.event_id), found.closes_at
    if found is None:
        insert_rows(
            conn,
            COALESCING,
            [
                {
                    "slot": slot,
                    "subscription": subscription,
                    "key": key,
                    "event_id": event_id,
                    "closes_at": closes,
                }
            ],
        )
        return event_id, closes
    taken = conn.execute(
        update(COALESCING)
        .where(COALESCING.c.slot == slot, COALESCING.c.closes_at <= now)
        .values(event_id=event_id, closes_at=closes)
    )
    if taken.rowcount != 1:
        raise WindowTaken(slot)
    return event_id, closes


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


def events_by_keys(store: JobStore, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The events recorded with each of idempotency ``keys`` (those recorded), by key:
    each one's ``id``, ``type``, ``dataset``, ``created_at`` and its job's ``status``."""
    if not keys:
        return {}
    with store.transaction() as conn:
        rows = conn.execute(
            select(
                EVENTS.c.idempotency_key,
                EVENTS.c.id,
                EVENTS.c.type,
                EVENTS.c.dataset,
                EVENTS.c.created_at,
                EVENTS.c.job_id,
                JOBS.c.status,
            )
            .select_from(EVENTS.outerjoin(JOBS, JOBS.c.id == EVENTS.c.job_id))
            .where(EVENTS.c.idempotency_key.in_(keys))
        ).all()
    return {
        row.idempotency_key: {
            "id": row.id,
            "type": row.type,
            "dataset": row.dataset,
            "created_at": row.created_at.isoformat(),
            "job_id": row.job_id,
            "status": row.status,
        }
        for row in rows
    }


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
