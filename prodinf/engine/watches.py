"""URL watches: many waiting steps, one look per URL per interval, no task per look.

A step that waits for a URL to finish returns ``Wait(..., watch=Watch(url, ...))``.
The runner records, in the same transaction as the wait, a row for the URL
(shared by every step watching it) and one for the step (see
:mod:`prodinf.store.watches`). Reconcilers (in every worker and in beat) call
:func:`look_due`: it claims the watches whose look is due, fetches each URL once,
and then

- the URL still pending: the next look is ``interval`` seconds on;
- a final ``status``: every watching step is woken with the document;
- a failed look (error, 404, not JSON): the next look backs off, and steps whose
  ``max_errors`` is reached are woken with the reason;
- a URL the guard refuses (:mod:`prodinf.outbound`: its name now resolves to a denied
  address): every watching step is woken with ``refused`` and the reason.

Waking a step writes ``state["watched"]`` and makes it (and its job) due, so the
reconciler's next pass publishes it. A pending watch therefore costs one HTTP
request and one row update per interval, however many steps share it, and never
a worker task. Watchers whose step stopped waiting (cancelled, past its own
deadline) are dropped at the next look; a watch with no watchers is deleted.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from prodinf.engine.waits import look_backoff
from prodinf.exceptions import AddressDenied, PermanentError, RemoteUnavailable
from prodinf.outbound import Guard
from prodinf.redact import redact_text
from prodinf.remote import fetch_status, is_pending
from prodinf.status import TERMINAL
from prodinf.store import JobStore
from prodinf.store import watches as stored
from prodinf.store.types import utcnow

__all__ = ["Look", "Seen", "look", "look_due"]

log = logging.getLogger(__name__)

#: Seconds a claimed look may take before another reconciler may claim it again: the
#: longest look (30 s) and its record. Looks are claimed ``parallel`` at a time, so a
#: reconciler killed mid-look (or a store gone while it records) holds up a few
#: watches for this long at most.
CLAIM_SECONDS = 35.0
#: Steps woken per transaction.
WAKE_BATCH = 500


class Seen(StrEnum):
    """What one look at a URL found."""

    #: Its ``status`` says it is still going.
    PENDING = "pending"
    #: It reported a final ``status``.
    COMPLETE = "complete"
    #: It could not be read this time (error, 404, not JSON): look again.
    ERROR = "error"
    #: It can never answer (not a valid URL).
    FAILED = "failed"
    #: It resolves to an address PRODINF_DENIED_NETWORKS refuses: it was not fetched.
    REFUSED = "refused"


@dataclass(frozen=True)
class Look:
    """What one look at a URL found, with its ``status``, ``document`` or ``problem``."""

    outcome: Seen
    status: str | None = None
    document: dict[str, Any] | None = None
    problem: str | None = None


def look(url: str, timeout: float, guard: Guard | None = None) -> Look:
    """GET ``url`` once, through ``guard`` (the default deny list when None), and say
    what its JSON ``status`` means."""
    shown = redact_text(url)
    try:
        code, document = fetch_status(url, timeout=timeout, guard=guard)
    except AddressDenied as exc:
        return Look(Seen.REFUSED, problem=exc.message)
    except PermanentError as exc:
        return Look(Seen.FAILED, problem=exc.message)
    except RemoteUnavailable as exc:
        return Look(Seen.ERROR, problem=exc.message)
    status = document.get("status") if document is not None else None
    if code == 200 and isinstance(status, str):
        if is_pending(status):
            return Look(Seen.PENDING, status=status)
        return Look(Seen.COMPLETE, status=status, document=document)
    if code != 200:
        return Look(Seen.ERROR, problem=f"{shown} answered HTTP {code}")
    if document is None:
        return Look(Seen.ERROR, problem=f"{shown} did not answer a JSON object")
    return Look(Seen.ERROR, problem=f"{shown} answered JSON without a text `status`")


def look_at_job(store: JobStore, job_id: str) -> Look:
    """A look at a job of this store (a ``prodinf:job/<id>`` watch): a safety net, for
    the transaction that ends the job wakes its watchers itself."""
    with store.engine.connect() as conn:
        status = stored.job_status(conn, job_id)
    if status is None:
        return Look(Seen.FAILED, problem=f"job {job_id} is not in this store")
    if status in TERMINAL:
        return Look(Seen.COMPLETE, status=status)
    return Look(Seen.PENDING, status=status)


def look_due(
    store: JobStore,
    *,
    limit: int = 200,
    parallel: int = 8,
    batches: int = 5,
    guard: Guard | None = None,
) -> int:
    """Look at the watches that are due and wake the steps they concern; every look goes
    through ``guard`` (``Guard.of(settings)``; the default deny list when None).

    Works through up to ``batches`` batches of ``limit`` watches, ``parallel``
    looks at a time, and returns the number of URLs looked at. Safe to call from
    several processes at once: each watch is claimed with a conditional update.
    """
    total = 0
    for _ in range(batches):
        looked = _look_batch(store, limit, parallel, guard)
        total += looked
        if looked < limit:
            break
    return total


def _look_batch(store: JobStore, limit: int, parallel: int, guard: Guard | None) -> int:
    """Look at up to ``limit`` due watches, claiming ``parallel`` at a time."""
    looked = 0
    while looked < limit:
        chunk = min(parallel, limit - looked)
        done = _look_chunk(store, chunk, parallel, guard)
        looked += done
        if done < chunk:
            break
    return looked


def _look_chunk(store: JobStore, limit: int, parallel: int, guard: Guard | None) -> int:
    claimed = stored.claim_due(store, limit, CLAIM_SECONDS)
    if not claimed:
        return 0

    def one(row: stored.DueWatch) -> Look:
        job_id = stored.watched_job(row.url)
        if job_id is not None:
            return look_at_job(store, job_id)
        return look(row.url, timeout=min(30.0, max(5.0, row.interval)), guard=guard)

    with ThreadPoolExecutor(max_workers=min(parallel, len(claimed))) as pool:
        looks = list(pool.map(one, claimed))
    pending = [
        (w, f.status) for w, f in zip(claimed, looks, strict=True) if f.outcome == Seen.PENDING
    ]
    if pending:
        try:
            stored.still_pending(store, pending)
        except Exception:  # the claims run out and another pass looks again
            log.exception("could not record %d looks", len(pending))
    for watch, found in zip(claimed, looks, strict=True):
        if found.outcome == Seen.PENDING:
            continue
        try:
            _settle(store, watch, found)
        except Exception:  # the claim runs out and another pass looks again
            log.exception("could not record a look at %s", redact_text(watch.url))
    return len(claimed)


def _settle(store: JobStore, row: stored.DueWatch, found: Look) -> None:
    """Record a look that ended the watch (or failed): wake whom it concerns."""
    now = utcnow()
    with store.transaction() as conn:
        if found.outcome == Seen.COMPLETE:
            outcome = {"outcome": Seen.COMPLETE, "status": found.status, "document": found.document}
            woken = stored.watchers(conn, row.id, None)
        else:
            errors = int(row.errors) + 1
            reason = f"gave up after {errors} failed looks in a row: {found.problem}"
            if found.outcome in (Seen.FAILED, Seen.REFUSED):
                reason = found.problem or "the URL cannot be fetched"
            ended = Seen.REFUSED if found.outcome == Seen.REFUSED else Seen.FAILED
            outcome = {"outcome": ended, "status": row.status, "reason": reason}
            if found.outcome == Seen.ERROR:
                next_look = now + timedelta(seconds=look_backoff(row.interval, errors))
                stored.failed_look(conn, row.id, errors, next_look)
            woken = stored.watchers(conn, row.id, errors if found.outcome == Seen.ERROR else None)
    # Wake in batches, each in its own transaction.
    for start in range(0, len(woken), WAKE_BATCH):
        with store.transaction() as conn:
            stored.wake(conn, row.id, woken[start : start + WAKE_BATCH], outcome)
    if found.outcome in (Seen.COMPLETE, Seen.FAILED, Seen.REFUSED):
        stored.delete_watch(store, row.id)
    else:
        stored.delete_unwatched(store, row.id)
