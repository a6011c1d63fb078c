"""The workers that use a store: each says it is alive every ``SEEN_EVERY`` seconds.

A worker's row (``prodinf_workers``, migration 0011) names it (Celery's node name),
the queues it consumes and when it was last seen; it is deleted as the worker stops.
A process that submits work reads it to warn when no worker has used the store of
late: most often a process that found another store than the workers (another
``PRODINF_HOME``), whose jobs would wait for ever.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from prodinf.store.models import WORKERS
from prodinf.store.repository import JobStore
from prodinf.store.types import insert_if_absent, utcnow

__all__ = ["SEEN_EVERY", "SEEN_WITHIN", "Worker", "forget", "recent", "seen"]

#: Seconds between a running worker's reports.
SEEN_EVERY = 15.0
#: A worker not seen for this long is not counted as running.
SEEN_WITHIN = 60.0


@dataclass(frozen=True)
class Worker:
    name: str
    queues: list[str]
    pid: int
    started_at: datetime
    seen_at: datetime


def seen(
    store: JobStore, name: str, queues: Collection[str], pid: int, started_at: datetime
) -> None:
    """Record that worker ``name`` (consuming ``queues``) is alive now."""
    now = utcnow()
    with store.transaction() as conn:
        conn.execute(
            insert_if_absent(conn, WORKERS, "name").values(
                name=name, queues=sorted(queues), pid=pid, started_at=started_at, seen_at=now
            )
        )
        conn.execute(
            update(WORKERS)
            .where(WORKERS.c.name == name)
            .values(queues=sorted(queues), pid=pid, started_at=started_at, seen_at=now)
        )


def forget(store: JobStore, name: str) -> None:
    """Delete the row of worker ``name``, which is stopping."""
    with store.transaction() as conn:
        conn.execute(delete(WORKERS).where(WORKERS.c.name == name))


def recent(store: JobStore, within: float = SEEN_WITHIN) -> list[Worker]:
    """The workers seen in the last ``within`` seconds, by name."""
    since = utcnow() - timedelta(seconds=within)
    with store.reading() as session:
        rows = session.execute(
            select(WORKERS).where(WORKERS.c.seen_at >= since).order_by(WORKERS.c.name)
        ).all()
    return [Worker(r.name, list(r.queues), r.pid, r.started_at, r.seen_at) for r in rows]
