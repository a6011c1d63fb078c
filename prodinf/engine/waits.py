"""What a step returns to wait without holding a worker: a ``Wait``, maybe on a ``Watch``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from prodinf.store.rows import NewRows

__all__ = ["MAX_LOOK_BACKOFF", "Child", "Commit", "Wait", "Watch", "look_backoff"]

#: Longest pause between looks at a URL that keeps failing.
MAX_LOOK_BACKOFF = 3600.0


def look_backoff(interval: float, errors: int) -> float:
    """Seconds to the next look at a URL after ``errors`` failed looks in a row."""
    if errors <= 0:
        return interval
    return min(interval * 2.0 ** min(errors - 1, 20), MAX_LOOK_BACKOFF)


@dataclass(frozen=True)
class Watch:
    """A URL a waiting step wants looked at until its JSON ``status`` is final.

    The watch is shared: however many steps watch one URL, a reconciler fetches
    it once per ``interval`` (the shortest asked for). The step runs again early,
    with ``ctx.state["watched"]`` set, once the URL reports a final status
    (``{"outcome": "complete", "status", "document"}``) or has failed
    ``max_errors`` looks in a row (``{"outcome": "failed", "status", "reason"}``).
    ``errors`` counts the failed looks the step already made itself.
    """

    url: str
    interval: float
    max_errors: int = 10
    errors: int = 0

    @property
    def first_look_in(self) -> float:
        """Seconds to the first look of a new watch (backed off by the step's own errors)."""
        return look_backoff(self.interval, self.errors)


@dataclass(frozen=True)
class Child:
    """A job of this prodinf that a step starts and waits for.

    ``name`` is unique within the step (at most 60 characters): the child's
    idempotency key is made from the parent job, the step and it, so a step that runs
    again starts no child twice. ``params`` are validated as a submission's are.
    ``queue`` puts the child on another queue than its kind's.
    """

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None


@dataclass(frozen=True)
class Wait:
    """Returned by a step to be executed again later, without holding a worker.

    ``state`` is merged into the step's persisted state, which the next
    execution reads as ``ctx.state``. With a ``watch``, the step is also woken
    as soon as the watched URL finishes (see :class:`Watch`); ``seconds`` is then
    how long to wait at most. With ``children``, the jobs not started yet are
    started in the transaction that records the wait, and the end of each (or, with
    ``last``, of the last one) wakes the step at once (see :meth:`StepContext.start`).
    """

    seconds: float
    reason: str
    state: dict[str, Any] = field(default_factory=dict)
    watch: Watch | None = None
    children: tuple[Child, ...] = ()
    #: With ``children``: woken only by the end of the last one still running, not by
    #: each one's end.
    last: bool = False


@dataclass(frozen=True)
class Commit:
    """Returned by a step that writes rows with its success: ``output`` is the step's
    output, and ``write(conn, now)`` runs in the transaction that records it (so what
    it writes is there exactly when the step is done: never lost, never twice). The
    new jobs it returns are inserted in that transaction and sent after its commit
    (``register_metadata`` records its events so). ``wake(conn, now)``, run after it,
    names the (job, step) pairs to wake in that transaction (a handover freeing a copy
    slot wakes the next one waiting for it)."""

    output: Any
    write: Callable[[Connection, datetime], list[NewRows]]
    wake: Callable[[Connection, datetime], list[tuple[str, str]]] | None = None
