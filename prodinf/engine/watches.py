"""URL watches: many waiting steps, one look per URL per interval, no task per look.

A step that waits for a URL to finish returns ``Wait(..., watch=Watch(url, ...))``.
The runner records, in the same transaction as the wait, a row for the URL
(shared by every step watching it) and one for the step (see
:mod:`prodinf.store.watches`). Reconcilers (in every worker and in beat) call
:func:`look_due`: it claims the watches whose look is due, fetches each URL once,
and then

- the URL still pending: the next look is ``interval`` seconds on (less up to
  :data:`SPREAD` of it, so watches made together drift apart);
- a final ``status``: every watching step is woken with the document;
- a failed look (error, 404, not JSON): the next look backs off, and steps whose
  ``max_errors`` is reached are woken with the reason;
- a URL the guard refuses (:mod:`prodinf.outbound`: its name now resolves to a denied
  address): every watching step is woken with ``refused`` and the reason.

Waking a step writes ``state["watched"]`` and makes it (and its job) due, so the
reconciler's next pass publishes it. A pending watch therefore costs one HTTP
request and its share of a row update per interval, however many steps share it,
and never a worker task nor a job transition: the looks are claimed a few at a time
(``parallel``, one statement) and those still pending are recorded together,
:data:`RECORD` at a time (one UPDATE for them all).
Watchers whose step stopped waiting (cancelled, past its own deadline) are dropped
at the next look; a watch with no watchers is deleted.

Looks give way to work: a reconciler in a worker that has tasks to run (running or
received) looks only at watches :data:`YIELD_SECONDS` or more overdue, so a burst of
jobs runs at full speed and the looks it put off are made when the worker is idle
again (or by an idle worker's reconciler). A worker busy for long looks
:data:`YIELD_SECONDS` late, at the same pace: no look is dropped.

Looks cost little: each host's connections are kept between looks
(:mod:`prodinf.remote.sessions`); a URL whose server sent ``ETag`` or
``Last-Modified`` with a pending status is asked conditionally next time, and a 304
means it is still pending as it was (per process: a look made elsewhere is a full
GET); a watch on a job of this store makes no HTTP request at all, and the looks at
such watches in one claim are one read of the store.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from prodinf.engine.waits import look_backoff
from prodinf.exceptions import AddressDenied, PermanentError, RemoteUnavailable
from prodinf.outbound import Guard
from prodinf.redact import redact_text
from prodinf.remote import is_pending
from prodinf.remote.status_url import look_status
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
#: The next look at a pending URL is one interval on, less up to this fraction of it
#: (at random): never later than asked, and watches made together (a bulk submission)
#: spread over the interval instead of coming due at one moment each time.
SPREAD = 0.1
#: Pending looks recorded in one transaction (one UPDATE): fewer statements for the
#: same rows cost the store and the reconciler less CPU.
RECORD = 64
#: Seconds after its claim a pending look may wait for others to be recorded with: no
#: new claim is made past it before the record, so the record (after one more chunk of
#: looks, 30 s at most) comes within :data:`CLAIM_SECONDS` and no other reconciler
#: claims the watch meanwhile (at worst it would look once more: harmless).
RECORD_SECONDS = 2.0
#: Seconds a look may be put off while the worker it would run in has tasks to run.
YIELD_SECONDS = 10.0
#: URLs whose validators (``ETag``, ``Last-Modified``) a process keeps for conditional
#: looks.
KNOWN_URLS = 20_000


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
    what its JSON ``status`` means. When the last look at ``url`` in this process found
    it pending and its server sent validators (``ETag``, ``Last-Modified``), the GET is
    conditional, and a 304 says it is still what it was."""
    shown = redact_text(url)
    known = _known.get(url)
    try:
        answer = look_status(
            url,
            timeout=timeout,
            guard=guard,
            etag=known.etag if known else None,
            last_modified=known.last_modified if known else None,
        )
    except AddressDenied as exc:
        return Look(Seen.REFUSED, problem=exc.message)
    except PermanentError as exc:
        return Look(Seen.FAILED, problem=exc.message)
    except RemoteUnavailable as exc:
        return Look(Seen.ERROR, problem=exc.message)
    code, document = answer.code, answer.document
    if code == 304 and known is not None:  # not modified: still pending, as it was
        return Look(Seen.PENDING, status=known.status)
    _known.forget(url)
    status = document.get("status") if document is not None else None
    if code == 200 and isinstance(status, str):
        if is_pending(status):
            if answer.etag or answer.last_modified:
                _known.keep(url, _Known(status, answer.etag, answer.last_modified))
            return Look(Seen.PENDING, status=status)
        return Look(Seen.COMPLETE, status=status, document=document)
    if code != 200:
        return Look(Seen.ERROR, problem=f"{shown} answered HTTP {code}")
    if document is None:
        return Look(Seen.ERROR, problem=f"{shown} did not answer a JSON object")
    return Look(Seen.ERROR, problem=f"{shown} answered JSON without a text `status`")


@dataclass(frozen=True)
class _Known:
    """A pending status a URL's server sent with validators for the next look."""

    status: str
    etag: str | None
    last_modified: str | None


class _KnownStatuses:
    """The pending status and validators of the URLs last looked at in this process,
    the least recently looked at forgotten first (the next look at it is a full GET)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._known: OrderedDict[str, _Known] = OrderedDict()

    def get(self, url: str) -> _Known | None:
        with self._lock:
            return self._known.get(url)

    def keep(self, url: str, known: _Known) -> None:
        with self._lock:
            self._known[url] = known
            self._known.move_to_end(url)
            while len(self._known) > self.size:
                self._known.popitem(last=False)

    def forget(self, url: str) -> None:
        with self._lock:
            self._known.pop(url, None)


#: What a conditional look needs, for as many URLs as one worker usually watches.
_known = _KnownStatuses(KNOWN_URLS)


def look_at_job(store: JobStore, job_id: str) -> Look:
    """A look at a job of this store (a ``prodinf:job/<id>`` watch): a safety net, for
    the transaction that ends the job wakes its watchers itself."""
    return look_at_jobs(store, [job_id])[job_id]


def look_at_jobs(store: JobStore, job_ids: list[str]) -> dict[str, Look]:
    """:func:`look_at_job` for several jobs, in one read."""
    with store.engine.connect() as conn:
        statuses = stored.job_statuses(conn, job_ids)
    looks: dict[str, Look] = {}
    for job_id in job_ids:
        status = statuses.get(job_id)
        if status is None:
            looks[job_id] = Look(Seen.FAILED, problem=f"job {job_id} is not in this store")
        elif status in TERMINAL:
            looks[job_id] = Look(Seen.COMPLETE, status=status)
        else:
            looks[job_id] = Look(Seen.PENDING, status=status)
    return looks


def look_due(
    store: JobStore,
    *,
    limit: int = 200,
    parallel: int = 8,
    batches: int = 5,
    guard: Guard | None = None,
    busy: Callable[[], bool] | None = None,
) -> int:
    """Look at the watches that are due and wake the steps they concern; every look goes
    through ``guard`` (``Guard.of(settings)``; the default deny list when None). While
    ``busy()`` says the caller's process has tasks to run, only the watches due
    :data:`YIELD_SECONDS` ago or more are looked at.

    Works through up to ``batches`` batches of ``limit`` watches, ``parallel``
    looks at a time, and returns the number of URLs looked at. Safe to call from
    several processes at once: each watch is claimed with a conditional update.
    """
    total = 0
    for _ in range(batches):
        looked = _look_batch(store, limit, parallel, guard, busy)
        total += looked
        if looked < limit:
            break
    return total


def _look_batch(
    store: JobStore,
    limit: int,
    parallel: int,
    guard: Guard | None,
    busy: Callable[[], bool] | None,
) -> int:
    """Look at up to ``limit`` due watches, claiming ``parallel`` at a time; the looks
    that found their URL still pending are recorded together, :data:`RECORD` at a time."""
    looked = 0
    pending: list[tuple[stored.DueWatch, str | None]] = []
    since = 0.0  # when the oldest of ``pending`` was claimed
    while looked < limit:
        if len(pending) >= RECORD or (pending and time.monotonic() - since > RECORD_SECONDS):
            _record(store, pending)
            pending = []
        chunk = min(parallel, limit - looked)
        claimed_at, unrecorded = time.monotonic(), bool(pending)
        late = YIELD_SECONDS if busy is not None and busy() else 0.0
        done = _look_chunk(store, chunk, parallel, guard, pending, late)
        if not unrecorded:
            since = claimed_at
        looked += done
        if done < chunk:
            break
    _record(store, pending)
    return looked


def _record(store: JobStore, pending: list[tuple[stored.DueWatch, str | None]]) -> None:
    if not pending:
        return
    try:
        stored.still_pending(store, pending, spread=SPREAD)
    except Exception:  # the claims run out and another pass looks again
        log.exception("could not record %d looks", len(pending))


def _look_chunk(
    store: JobStore,
    limit: int,
    parallel: int,
    guard: Guard | None,
    pending: list[tuple[stored.DueWatch, str | None]],
    late: float = 0.0,
) -> int:
    """Claim up to ``limit`` watches due ``late`` seconds ago or more and look at them:
    the still pending are added to ``pending``, the others recorded now. Returns how
    many were claimed."""
    claimed = stored.claim_due(store, limit, CLAIM_SECONDS, late=late)
    if not claimed:
        return 0
    jobs = [j for j in (stored.watched_job(w.url) for w in claimed) if j is not None]
    own = look_at_jobs(store, jobs) if jobs else {}  # no HTTP: one read for them all
    urls = [w for w in claimed if stored.watched_job(w.url) is None]

    def one(row: stored.DueWatch) -> Look:
        return look(row.url, timeout=min(30.0, max(5.0, row.interval)), guard=guard)

    if len(urls) > 1:
        fetched = dict(zip((w.id for w in urls), _pool(parallel).map(one, urls), strict=True))
    else:
        fetched = {w.id: one(w) for w in urls}
    looks = [
        own[job] if (job := stored.watched_job(w.url)) is not None else fetched[w.id]
        for w in claimed
    ]
    for watch, found in zip(claimed, looks, strict=True):
        if found.outcome == Seen.PENDING:
            pending.append((watch, found.status))
            continue
        try:
            _settle(store, watch, found)
        except Exception:  # the claim runs out and another pass looks again
            log.exception("could not record a look at %s", redact_text(watch.url))
    return len(claimed)


_threads = threading.local()


def _pool(parallel: int) -> ThreadPoolExecutor:
    """The calling thread's threads for ``parallel`` looks at a time, kept between its
    passes (and let go when it ends): two reconcilers in one process never queue their
    looks behind each other's."""
    pools: dict[int, ThreadPoolExecutor] | None = getattr(_threads, "pools", None)
    if pools is None:
        pools = _threads.pools = {}
    if parallel not in pools:
        pools[parallel] = ThreadPoolExecutor(parallel, thread_name_prefix="prodinf-look")
    return pools[parallel]


def _forked() -> None:
    """In a forked child: no thread of the parent's pools survived the fork, and a lock
    held by one of its threads at the fork would never be released."""
    global _threads, _known
    _threads = threading.local()
    _known = _KnownStatuses(KNOWN_URLS)


os.register_at_fork(after_in_child=_forked)


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
