"""URL watches in the store: who watches which URL, which looks are due, and waking.

The engine (:mod:`prodinf.engine.watches`) decides when to look and what a look
means; these functions are the reads and writes. A watch row per URL
(``prodinf_watches``) is shared by every step watching it (``prodinf_watchers``).
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, bindparam, case, delete, exists, literal, select, update
from sqlalchemy.engine import Connection

from prodinf.status import ACTIVE, TERMINAL, StepStatus
from prodinf.store.models import JOBS, STEPS, WATCHERS, WATCHES
from prodinf.store.repository import JobStore
from prodinf.store.types import insert_if_absent, utcnow

__all__ = [
    "JOB_WATCH",
    "DueWatch",
    "WatchRequest",
    "claim_due",
    "delete_unwatched",
    "delete_watch",
    "failed_look",
    "job_status",
    "job_statuses",
    "job_watch_key",
    "job_watch_url",
    "register",
    "still_pending",
    "wake",
    "wake_job_watchers",
    "wake_watchers_of",
    "watched_job",
    "watchers",
]

#: The URL of a watch on a job of this store: ``prodinf:job/<id>``. No HTTP look is
#: made: the transaction that ends the job wakes its watchers, and a reconciler's look
#: (a safety net) reads the job's status from the store.
JOB_WATCH = "prodinf:job/"


class WatchRequest(Protocol):
    """What a waiting step asks for (the engine's ``Watch``)."""

    @property
    def url(self) -> str: ...
    @property
    def interval(self) -> float: ...
    @property
    def max_errors(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def first_look_in(self) -> float: ...


@dataclass(frozen=True)
class DueWatch:
    """A watch claimed for a look."""

    id: int
    url: str
    interval: float
    errors: int
    status: str | None


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def job_watch_url(job_id: str) -> str:
    """The watch URL of job ``job_id`` of this store."""
    return f"{JOB_WATCH}{job_id}"


def watched_job(url: str) -> str | None:
    """The job id a ``prodinf:job/<id>`` watch URL names, else ``None``."""
    return url.removeprefix(JOB_WATCH) if url.startswith(JOB_WATCH) else None


def job_status(conn: Connection, job_id: str, *, share: bool = False) -> str | None:
    """The status of job ``job_id`` (``None`` if there is none); with ``share``, its row
    is locked against a change until this transaction ends."""
    query = select(JOBS.c.status).where(JOBS.c.id == job_id)
    return conn.scalar(query.with_for_update(read=True) if share else query)


def job_statuses(conn: Connection, job_ids: Sequence[str]) -> dict[str, str]:
    """The status of each of ``job_ids`` that exists."""
    found = conn.execute(select(JOBS.c.id, JOBS.c.status).where(JOBS.c.id.in_(list(job_ids))))
    return {str(job_id): str(status) for job_id, status in found}


def wake_job_watchers(conn: Connection, job_id: str) -> list[tuple[str, str]]:
    """In the transaction that ends job ``job_id``: the (job id, step) of the steps
    watching it, for the caller to wake; its watch is deleted.

    A plain read: a step registering its watch meanwhile reads the job's status with a
    share lock after writing the watch (``register``), so it waits for this end and
    sees it, and the two never wait for each other."""
    found = conn.scalar(select(WATCHES.c.id).where(WATCHES.c.url_key == job_watch_key(job_id)))
    return wake_watchers_of(conn, found)


def job_watch_key(job_id: str) -> str:
    """The ``url_key`` of the watch on job ``job_id`` of this store (if any)."""
    return url_key(job_watch_url(job_id))


def wake_watchers_of(conn: Connection, found: int | None) -> list[tuple[str, str]]:
    """What ``wake_job_watchers`` does once it has found the job's watch (``None``: none)."""
    if found is None:
        return []
    woken = [
        (str(j), str(s))
        for j, s in conn.execute(
            select(WATCHERS.c.job_id, WATCHERS.c.step).where(WATCHERS.c.watch_id == found)
        )
    ]
    conn.execute(delete(WATCHERS).where(WATCHERS.c.watch_id == found))
    conn.execute(delete(WATCHES).where(WATCHES.c.id == found))
    return woken


def register(conn: Connection, job_id: str, step: str, watch: WatchRequest) -> bool:
    """Make ``step`` of ``job_id`` (whose job row this transaction holds) a watcher of
    ``watch.url``, creating the watch if it is new (first look ``first_look_in`` on).

    For a watch on a job of this store, ``False`` if that job has ended already (or
    does not exist): the caller runs the step again at once instead of waiting."""
    now = utcnow()
    key = url_key(watch.url)
    # Insert-if-absent, then lock the row: steps of other jobs may start watching the
    # same new URL at the same moment, and a plain INSERT would fail all but one.
    conn.execute(
        insert_if_absent(conn, WATCHES, "url_key").values(
            url_key=key,
            url=watch.url,
            interval=watch.interval,
            next_look_at=now + timedelta(seconds=watch.first_look_in),
            errors=watch.errors,
            status=None,
            created_at=now,
        )
    )
    found = conn.execute(
        select(WATCHES.c.id, WATCHES.c.interval, WATCHES.c.next_look_at)
        .where(WATCHES.c.url_key == key)
        .with_for_update()
    ).one()
    watch_id = int(found.id)
    if watch.interval < found.interval:  # the shortest interval asked for wins
        conn.execute(
            update(WATCHES)
            .where(WATCHES.c.id == watch_id)
            .values(
                interval=watch.interval,
                next_look_at=min(found.next_look_at, now + timedelta(seconds=watch.interval)),
            )
        )
    conn.execute(delete(WATCHERS).where(WATCHERS.c.job_id == job_id, WATCHERS.c.step == step))
    conn.execute(
        WATCHERS.insert().values(
            job_id=job_id, step=step, watch_id=watch_id, max_errors=watch.max_errors
        )
    )
    watched = watched_job(watch.url)
    if watched is None:
        return True
    status = job_status(conn, watched, share=True)  # after the watch: see wake_job_watchers
    return status is not None and status not in TERMINAL


def claim_due(store: JobStore, limit: int, hold: float, *, late: float = 0.0) -> list[DueWatch]:
    """Claim up to ``limit`` watches whose look is due (``late`` seconds ago or more),
    each for ``hold`` seconds.

    The due watches are moved ``hold`` seconds on in one conditional update (still due:
    not claimed meanwhile), to an instant made for this claim, so reconcilers in several
    processes never claim the same watch twice: when another took some first, the rows
    at that instant are the ones this claim holds.
    """
    now = utcnow()
    # Microseconds of its own, so that this claim's rows are told from another's.
    mark = now + timedelta(seconds=hold, microseconds=secrets.randbelow(1_000_000))
    cutoff = now - timedelta(seconds=late)
    with store.transaction() as conn:
        due = conn.execute(
            select(
                WATCHES.c.id, WATCHES.c.url, WATCHES.c.interval, WATCHES.c.errors, WATCHES.c.status
            )
            .where(WATCHES.c.next_look_at <= cutoff)
            .order_by(WATCHES.c.next_look_at)
            .limit(limit)
        ).all()
        if not due:
            return []
        ids = [row.id for row in due]
        taken = conn.execute(
            update(WATCHES)
            .where(WATCHES.c.id.in_(ids), WATCHES.c.next_look_at <= now)
            .values(next_look_at=mark)
        ).rowcount
        if taken != len(ids):  # another reconciler claimed some first: keep what is ours
            ours = set(
                conn.scalars(
                    select(WATCHES.c.id).where(
                        WATCHES.c.id.in_(ids), WATCHES.c.next_look_at == mark
                    )
                )
            )
            due = [row for row in due if row.id in ours]
    return [DueWatch(row.id, row.url, float(row.interval), row.errors, row.status) for row in due]


def still_pending(
    store: JobStore, looks: Sequence[tuple[DueWatch, str | None]], *, spread: float = 0.0
) -> None:
    """Record looks that found their URL still pending, with the status each showed:
    the next look is one interval on, less up to ``spread`` of it (a fraction, drawn at
    random for each), so that watches made at one moment drift apart instead of
    coming due together every interval. Three statements for the whole batch (one
    UPDATE for every row): each costs a round trip and more CPU than its rows."""
    now = utcnow()
    ids = [watch.id for watch, _ in looks]
    when = WATCHES.c.next_look_at.type
    next_look = case(
        {
            watch.id: literal(
                now + timedelta(seconds=watch.interval * (1.0 - spread * random.random())), when
            )
            for watch, _ in looks
        },
        value=WATCHES.c.id,
    )
    shown = {watch.id: (status or "")[:200] for watch, status in looks}
    status: Any = next(iter(shown.values()))
    if len(set(shown.values())) > 1:
        status = case(shown, value=WATCHES.c.id)
    with store.transaction() as conn:
        _drop_stale(conn, ids)
        conn.execute(
            update(WATCHES)
            .where(WATCHES.c.id.in_(ids))
            .values(errors=0, status=status, next_look_at=next_look)
        )
        _delete_unwatched(conn, ids)


def failed_look(conn: Connection, watch_id: int, errors: int, next_look_at: datetime) -> None:
    """Record a failed look: ``errors`` in a row, the next one at ``next_look_at``."""
    conn.execute(
        update(WATCHES)
        .where(WATCHES.c.id == watch_id)
        .values(errors=errors, next_look_at=next_look_at)
    )


def watchers(conn: Connection, watch_id: int, errors: int | None) -> list[tuple[str, str]]:
    """(job id, step) of the watchers still waiting: all, or those whose ``max_errors``
    is reached after ``errors`` failed looks. Watchers that stopped waiting are dropped."""
    _drop_stale(conn, [watch_id])
    query = select(WATCHERS.c.job_id, WATCHERS.c.step).where(WATCHERS.c.watch_id == watch_id)
    if errors is not None:
        query = query.where(WATCHERS.c.max_errors <= errors)
    return [(job_id, step) for job_id, step in conn.execute(query.order_by(WATCHERS.c.job_id))]


def wake(
    conn: Connection,
    watch_id: int,
    woken: Sequence[tuple[str, str]],
    outcome: dict[str, Any],
) -> None:
    """Wake the waiting steps ``woken`` (job id, step) with ``state["watched"] = outcome``:
    they and their jobs are due now. Job rows are locked before steps, as the runner does."""
    now = utcnow()
    ids = sorted({job_id for job_id, _ in woken})
    conn.execute(select(JOBS.c.id).where(JOBS.c.id.in_(ids)).order_by(JOBS.c.id).with_for_update())
    wanted = set(woken)
    steps = conn.execute(
        select(STEPS.c.id, STEPS.c.job_id, STEPS.c.name, STEPS.c.state).where(
            STEPS.c.job_id.in_(ids), STEPS.c.status == StepStatus.WAITING
        )
    ).all()
    values = [
        {"b_id": s.id, "b_state": {**(s.state or {}), "watched": outcome}, "b_due": now}
        for s in steps
        if (s.job_id, s.name) in wanted
    ]
    if values:
        conn.execute(
            update(STEPS)
            .where(STEPS.c.id == bindparam("b_id"))
            .values(state=bindparam("b_state"), due_at=bindparam("b_due")),
            values,
        )
        conn.execute(
            update(JOBS)
            .where(JOBS.c.id.in_(ids), JOBS.c.status.in_(sorted(ACTIVE)))
            .values(next_run_at=now)
        )
    conn.execute(
        delete(WATCHERS).where(WATCHERS.c.watch_id == watch_id, WATCHERS.c.job_id.in_(ids))
    )


def delete_watch(store: JobStore, watch_id: int) -> None:
    """Forget a watch that is over (its URL finished or can never be read)."""
    with store.transaction() as conn:
        conn.execute(delete(WATCHERS).where(WATCHERS.c.watch_id == watch_id))
        conn.execute(delete(WATCHES).where(WATCHES.c.id == watch_id))


def delete_unwatched(store: JobStore, watch_id: int) -> None:
    """Delete the watch if no step watches it any more."""
    with store.transaction() as conn:
        _delete_unwatched(conn, [watch_id])


def _drop_stale(conn: Connection, watch_ids: Sequence[int]) -> None:
    """Forget watchers whose step no longer waits (cancelled, finished, past its deadline)."""
    waiting = exists().where(
        and_(
            STEPS.c.job_id == WATCHERS.c.job_id,
            STEPS.c.name == WATCHERS.c.step,
            STEPS.c.status == StepStatus.WAITING,
        )
    )
    conn.execute(delete(WATCHERS).where(WATCHERS.c.watch_id.in_(watch_ids), ~waiting))


def _delete_unwatched(conn: Connection, watch_ids: Sequence[int]) -> None:
    """Delete the watches among ``watch_ids`` that no step watches any more."""
    anyone = exists().where(WATCHERS.c.watch_id == WATCHES.c.id)
    conn.execute(delete(WATCHES).where(WATCHES.c.id.in_(watch_ids), ~anyone))
