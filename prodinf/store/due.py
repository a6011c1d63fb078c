"""Jobs that are due: what the reconciler claims to publish again.

A job is due when its ``next_run_at`` has passed: a wait has come due, a step's
lease ran out, a message was never confirmed sent, or a queued job's message has
sat unconsumed for a while. Each is claimed by moving ``next_run_at`` forward in
a conditional update, so several reconcilers never claim the same job in one pass
(the update finds nothing to move if another claimed it since it was read).

A job whose message is about to be sent is due again soon (``resend_after``);
``mark_sent`` moves it further (``redrive_after``) once the broker confirmed the
message, or back to now (``release``) when the broker refused it, so the next pass
tries again. A process that dies between the two leaves the job due soon: nothing
waits for ``redrive_after`` but a message that was sent.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Dialect

from prodinf.status import ACTIVE
from prodinf.store import pgrows
from prodinf.store.models import JOBS
from prodinf.store.repository import JobStore
from prodinf.store.types import utcnow

__all__ = ["claim_due", "mark_sent", "release"]


def claim_due(
    store: JobStore,
    *,
    until: datetime,
    queues: Collection[str] | None = None,
    limit: int = 1000,
) -> list[tuple[str, str]]:
    """Claim the due jobs (on ``queues``, or all), moving each one's ``next_run_at`` to
    ``until``; return (job id, queue) of each, earliest due first."""
    query = (
        select(JOBS.c.id, JOBS.c.queue, JOBS.c.next_run_at)
        .where(JOBS.c.status.in_(sorted(ACTIVE)), JOBS.c.next_run_at <= utcnow())
        .order_by(JOBS.c.next_run_at)
        .limit(limit)
    )
    if queues is not None:
        query = query.where(JOBS.c.queue.in_(list(queues)))
    # Looked for first without the write lock (SQLite's is one for the whole store): a
    # pass that finds nothing due, the usual one, holds up no writer.
    with store.reading() as session:
        found = session.execute(query).all()
    claimed: list[tuple[str, str]] = []
    if not found:
        return claimed
    with store.transaction() as conn:
        for job_id, queue, due in found:
            taken = conn.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.next_run_at == due)
                .values(next_run_at=until)
            )
            if taken.rowcount:
                claimed.append((job_id, queue))
    return claimed


def mark_sent(store: JobStore, job_ids: Collection[str], marked: datetime, later: datetime) -> int:
    """The messages of ``job_ids`` were confirmed sent: move each job's ``next_run_at``
    from ``marked`` (when it was due again if they were not) to ``later``.

    A job whose ``next_run_at`` has changed since (a worker took it already) is left
    alone. Returns how many were moved.
    """
    return _move(store, job_ids, marked, later)


def release(store: JobStore, job_ids: Collection[str], marked: datetime) -> int:
    """Claimed jobs whose messages were not sent (the broker refused): make them due
    now, so the next pass sends them as soon as the broker takes messages again."""
    return _move(store, job_ids, marked, utcnow())


def _move(store: JobStore, job_ids: Collection[str], marked: datetime, to: datetime) -> int:
    if not job_ids:
        return 0
    # Not worth a wait for the disk: lost in a crash, the move only lets the job be due
    # soon, and the reconciler sends its message again (at least once).
    with store.unhurried() as conn:
        if len(job_ids) == 1 and pgrows.usable(conn):  # each submission's: prepared
            (job_id,) = job_ids
            values = {"job_id": job_id, "marked": marked, "to": to}
            return int(pgrows.run(conn, _moved(conn.dialect), values).rowcount or 0)
        moved = conn.execute(
            update(JOBS)
            .where(JOBS.c.id.in_(list(job_ids)), JOBS.c.next_run_at == marked)
            .values(next_run_at=to)
        )
        return int(moved.rowcount or 0)


@functools.cache
def _moved(dialect: Dialect) -> pgrows.Prepared:
    """``_move`` of one job, as a statement prepared for psycopg."""
    when = JOBS.c.next_run_at.type  # times as every store keeps them: naive UTC
    return pgrows.prepared(
        update(JOBS)
        .where(
            JOBS.c.id == bindparam("job_id"),
            JOBS.c.next_run_at == bindparam("marked", type_=when),
        )
        .values(next_run_at=bindparam("to", type_=when)),
        dialect,
    )
