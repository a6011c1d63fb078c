"""URL watches: many waiting steps, one look per URL per interval, no task per look.

A step that waits for a URL to finish returns ``Wait(..., watch=Watch(url, ...))``.
The runner records, in the same transaction as the wait, a row for the URL
(``prodinf_watches``, shared by every step watching it) and one for the step
(``prodinf_watchers``). Reconcilers (in every worker and in beat) call
:func:`look_due`: it claims the watches whose look is due, fetches each URL once,
and then

- the URL still pending: the next look is ``interval`` seconds on;
- a final ``status``: every watching step is woken with the document;
- a failed look (error, 404, not JSON): the next look backs off, and steps whose
  ``max_errors`` is reached are woken with the reason.

Waking a step writes ``state["watched"]`` and makes it (and its job) due, so the
reconciler's next pass publishes it. A pending watch therefore costs one HTTP
request and one row update per interval, however many steps share it, and never
a worker task. Watchers whose step stopped waiting (cancelled, past its own
deadline) are dropped at the next look; a watch with no watchers is deleted.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, exists, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Insert

from prodinf.engine.steps import Watch
from prodinf.exceptions import PermanentError, RemoteUnavailable
from prodinf.redact import redact_text
from prodinf.remote import fetch_status, is_pending
from prodinf.store import JobStore, StepRow, WatcherRow, WatchRow
from prodinf.store.models import JobRow
from prodinf.store.types import utcnow

__all__ = ["Look", "look", "look_due", "register"]

log = logging.getLogger(__name__)

WATCHES = cast(Table, WatchRow.__table__)
WATCHERS = cast(Table, WatcherRow.__table__)
STEPS = cast(Table, StepRow.__table__)
JOBS = cast(Table, JobRow.__table__)

#: Seconds a claimed look may take before another reconciler may claim it again.
CLAIM_SECONDS = 120.0
#: Longest pause between looks at a URL that keeps failing.
MAX_BACKOFF = 3600.0
#: Steps woken per transaction.
WAKE_BATCH = 500


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def register(conn: Connection, job_id: str, step: str, watch: Watch) -> None:
    """Make ``step`` of ``job_id`` (whose job row this transaction holds) a watcher of
    ``watch.url``, creating the watch if it is new (first look one interval from now)."""
    now = utcnow()
    key = url_key(watch.url)
    # Insert-if-absent, then lock the row: steps of other jobs may start watching the
    # same new URL at the same moment, and a plain INSERT would fail all but one.
    conn.execute(
        _insert_if_absent(conn).values(
            url_key=key,
            url=watch.url,
            interval=watch.interval,
            next_look_at=now + timedelta(seconds=_backoff(watch.interval, watch.errors)),
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


def _insert_if_absent(conn: Connection) -> Insert:
    """An INSERT into the watches that does nothing when the URL is already watched."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(WATCHES).on_conflict_do_nothing(index_elements=["url_key"])
    if dialect == "sqlite":
        return sqlite.insert(WATCHES).on_conflict_do_nothing(index_elements=["url_key"])
    # MySQL/MariaDB: a no-op update, not INSERT IGNORE, which would take a shared lock
    # on an existing row that the SELECT ... FOR UPDATE after it then deadlocks upgrading.
    insert = mysql.insert(WATCHES)
    return insert.on_duplicate_key_update(url_key=insert.inserted.url_key)


@dataclass(frozen=True)
class Look:
    """What one look at a URL found: ``pending``, ``complete``, ``error`` (try again)
    or ``failed`` (the URL can never answer, e.g. it is not a valid URL)."""

    outcome: str
    status: str | None = None
    document: dict[str, Any] | None = None
    problem: str | None = None


def look(url: str, timeout: float) -> Look:
    """GET ``url`` once and say what its JSON ``status`` means."""
    shown = redact_text(url)
    try:
        code, document = fetch_status(url, timeout=timeout)
    except PermanentError as exc:
        return Look("failed", problem=exc.message)
    except RemoteUnavailable as exc:
        return Look("error", problem=exc.message)
    status = document.get("status") if document is not None else None
    if code == 200 and isinstance(status, str):
        if is_pending(status):
            return Look("pending", status=status)
        return Look("complete", status=status, document=document)
    if code != 200:
        return Look("error", problem=f"{shown} answered HTTP {code}")
    if document is None:
        return Look("error", problem=f"{shown} did not answer a JSON object")
    return Look("error", problem=f"{shown} answered JSON without a text `status`")


def look_due(store: JobStore, *, limit: int = 200, parallel: int = 8, batches: int = 5) -> int:
    """Look at the watches that are due and wake the steps they concern.

    Works through up to ``batches`` batches of ``limit`` watches, ``parallel``
    looks at a time, and returns the number of URLs looked at. Safe to call from
    several processes at once: each watch is claimed with a conditional update.
    """
    total = 0
    for _ in range(batches):
        looked = _look_batch(store, limit, parallel)
        total += looked
        if looked < limit:
            break
    return total


def _look_batch(store: JobStore, limit: int, parallel: int) -> int:
    now = utcnow()
    claimed: list[_Due] = []
    with store.transaction() as conn:
        due = conn.execute(
            select(
                WATCHES.c.id,
                WATCHES.c.url,
                WATCHES.c.interval,
                WATCHES.c.errors,
                WATCHES.c.status,
                WATCHES.c.next_look_at,
            )
            .where(WATCHES.c.next_look_at <= now)
            .order_by(WATCHES.c.next_look_at)
            .limit(limit)
        ).all()
        for row in due:
            taken = conn.execute(
                update(WATCHES)
                .where(WATCHES.c.id == row.id, WATCHES.c.next_look_at == row.next_look_at)
                .values(next_look_at=now + timedelta(seconds=CLAIM_SECONDS))
            )
            if taken.rowcount:
                claimed.append(_Due(row.id, row.url, float(row.interval), row.errors, row.status))
    if not claimed:
        return 0

    def one(row: _Due) -> Look:
        return look(row.url, timeout=min(30.0, max(5.0, row.interval)))

    with ThreadPoolExecutor(max_workers=min(parallel, len(claimed))) as pool:
        looks = list(pool.map(one, claimed))
    pending = [(w, f) for w, f in zip(claimed, looks, strict=True) if f.outcome == "pending"]
    if pending:
        try:
            _still_pending(store, pending)
        except Exception:  # the claims run out and another pass looks again
            log.exception("could not record %d looks", len(pending))
    for watch, found in zip(claimed, looks, strict=True):
        if found.outcome == "pending":
            continue
        try:
            _settle(store, watch, found)
        except Exception:  # the claim runs out and another pass looks again
            log.exception("could not record a look at %s", redact_text(watch.url))
    return len(claimed)


def _still_pending(store: JobStore, looks: Sequence[tuple[_Due, Look]]) -> None:
    """Record a batch of looks that found their URL still pending: a few statements."""
    now = utcnow()
    ids = [watch.id for watch, _ in looks]
    with store.transaction() as conn:
        _drop_stale(conn, ids)
        conn.execute(
            update(WATCHES)
            .where(WATCHES.c.id == bindparam("b_id"))
            .values(errors=0, status=bindparam("b_status"), next_look_at=bindparam("b_next")),
            [
                {
                    "b_id": watch.id,
                    "b_status": (found.status or "")[:200],
                    "b_next": now + timedelta(seconds=watch.interval),
                }
                for watch, found in looks
            ],
        )
        _delete_unwatched(conn, ids)


@dataclass(frozen=True)
class _Due:
    """A watch claimed for a look."""

    id: int
    url: str
    interval: float
    errors: int
    status: str | None


def _settle(store: JobStore, row: _Due, found: Look) -> None:
    now = utcnow()
    with store.transaction() as conn:
        _drop_stale(conn, [row.id])
        if found.outcome == "complete":
            outcome = {"outcome": "complete", "status": found.status, "document": found.document}
            watchers = _watchers(conn, row.id, None)
        else:
            errors = int(row.errors) + 1
            last = row.status
            reason = f"gave up after {errors} failed looks in a row: {found.problem}"
            if found.outcome == "failed":
                reason = found.problem or "the URL cannot be fetched"
            outcome = {"outcome": "failed", "status": last, "reason": reason}
            if found.outcome == "error":
                conn.execute(
                    update(WATCHES)
                    .where(WATCHES.c.id == row.id)
                    .values(
                        errors=errors,
                        next_look_at=now + timedelta(seconds=_backoff(float(row.interval), errors)),
                    )
                )
            watchers = _watchers(conn, row.id, errors if found.outcome == "error" else None)
    # Wake in batches, each in its own transaction, jobs locked before their steps.
    for start in range(0, len(watchers), WAKE_BATCH):
        with store.transaction() as conn:
            _wake(conn, row.id, watchers[start : start + WAKE_BATCH], outcome)
    if found.outcome in ("complete", "failed"):
        with store.transaction() as conn:
            conn.execute(delete(WATCHERS).where(WATCHERS.c.watch_id == row.id))
            conn.execute(delete(WATCHES).where(WATCHES.c.id == row.id))
    else:
        with store.transaction() as conn:
            _delete_unwatched(conn, [row.id])


def _watchers(conn: Connection, watch_id: int, errors: int | None) -> list[tuple[str, str]]:
    """(job id, step) of the watchers to wake: all, or those whose ``max_errors`` is reached."""
    query = select(WATCHERS.c.job_id, WATCHERS.c.step).where(WATCHERS.c.watch_id == watch_id)
    if errors is not None:
        query = query.where(WATCHERS.c.max_errors <= errors)
    return [(job_id, step) for job_id, step in conn.execute(query.order_by(WATCHERS.c.job_id))]


def _wake(
    conn: Connection,
    watch_id: int,
    watchers: Sequence[tuple[str, str]],
    outcome: dict[str, Any],
) -> None:
    now = utcnow()
    ids = sorted({job_id for job_id, _ in watchers})
    # The runner locks a job row, then its steps: take the job rows first, in order.
    conn.execute(select(JOBS.c.id).where(JOBS.c.id.in_(ids)).order_by(JOBS.c.id).with_for_update())
    wanted = set(watchers)
    steps = conn.execute(
        select(STEPS.c.id, STEPS.c.job_id, STEPS.c.name, STEPS.c.state).where(
            STEPS.c.job_id.in_(ids), STEPS.c.status == "waiting"
        )
    ).all()
    woken = [
        {"b_id": s.id, "b_state": {**(s.state or {}), "watched": outcome}, "b_due": now}
        for s in steps
        if (s.job_id, s.name) in wanted
    ]
    if woken:
        conn.execute(
            update(STEPS)
            .where(STEPS.c.id == bindparam("b_id"))
            .values(state=bindparam("b_state"), due_at=bindparam("b_due")),
            woken,
        )
        conn.execute(
            update(JOBS)
            .where(JOBS.c.id.in_(ids), JOBS.c.status.in_(("queued", "running", "waiting")))
            .values(next_run_at=now)
        )
    conn.execute(
        delete(WATCHERS).where(WATCHERS.c.watch_id == watch_id, WATCHERS.c.job_id.in_(ids))
    )


def _drop_stale(conn: Connection, watch_ids: Sequence[int]) -> None:
    """Forget watchers whose step no longer waits (cancelled, finished, past its deadline)."""
    waiting = exists().where(
        and_(
            STEPS.c.job_id == WATCHERS.c.job_id,
            STEPS.c.name == WATCHERS.c.step,
            STEPS.c.status == "waiting",
        )
    )
    conn.execute(delete(WATCHERS).where(WATCHERS.c.watch_id.in_(watch_ids), ~waiting))


def _delete_unwatched(conn: Connection, watch_ids: Sequence[int]) -> None:
    """Delete the watches among ``watch_ids`` that no step watches any more."""
    anyone = exists().where(WATCHERS.c.watch_id == WATCHES.c.id)
    conn.execute(delete(WATCHES).where(WATCHES.c.id.in_(watch_ids), ~anyone))


def _backoff(interval: float, errors: int) -> float:
    """Seconds to the next look after ``errors`` failed looks in a row."""
    if errors <= 0:
        return interval
    return min(interval * 2.0 ** min(errors - 1, 20), MAX_BACKOFF)
