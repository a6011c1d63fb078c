"""A job's rows as one transaction sees them: locked and read once, written once.

Every change of a job's status goes through :class:`JobRows`: the runner records a
step's outcome and claims the next step in one transaction, and cancel and retry
change a job the same way. It reads the job row and its step rows at the start (the job row
first, then its steps, ``FOR UPDATE``: the order everyone locks them in), works
on these plain copies, and at the end writes what changed: one ``UPDATE`` per
changed table and one ``INSERT`` for all the history events. Core statements, not
the ORM's unit of work: a worker spends most of its time here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import Table, TextClause, Update, bindparam, case, select, text, update
from sqlalchemy.engine import Connection, Dialect

from prodinf import metrics
from prodinf.redact import redact, redact_text
from prodinf.status import TERMINAL
from prodinf.store.children import wake_step
from prodinf.store.models import HISTORY, JOBS, STEPS, JobRow
from prodinf.store.repository import after_commit, job_summary
from prodinf.store.types import utcnow
from prodinf.store.watches import WatchRequest, register, wake_job_watchers

__all__ = [
    "JobRows",
    "LockedJob",
    "LockedStep",
    "NewRows",
    "history_entry",
    "insert_rows",
]


def history_entry(
    job_id: str,
    event: str,
    step: str | None,
    message: str | None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The values of a history row for an event now, credentials masked (for ``insert``)."""
    return {
        "job_id": job_id,
        "at": utcnow(),
        "event": event,
        "step": step,
        "message": redact_text(message) if message else message,
        "data": redact(data) if data else data,
    }


@dataclass(frozen=True)
class NewRows:
    """A new job's row, its step rows and its ``job.submitted`` event, ready to insert."""

    values: dict[str, Any]
    steps: list[dict[str, Any]]
    history: dict[str, Any]
    #: History after ``job.submitted`` (a job submitted already waiting for children).
    more_history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.values["id"])

    @property
    def queue(self) -> str:
        return str(self.values["queue"])

    @property
    def next_run_at(self) -> datetime:
        """When the reconciler sends its message again if none is confirmed sent before."""
        when: datetime = self.values["next_run_at"]
        return when

    def summary(self) -> dict[str, Any]:
        """The job as lists show it (what a submission answers)."""
        return job_summary(JobRow(**self.values))

    def insert(self, conn: Connection) -> None:
        """Insert the rows: Core statements, one per table (the ORM's unit of work
        would cost more than the rest of a submission). The one place a job is
        created: counted here once committed (and as ended, if it starts out ended)."""
        insert_rows(conn, JOBS, [self.values])
        insert_rows(conn, STEPS, self.steps)
        insert_rows(conn, HISTORY, [self.history, *self.more_history])
        kind, status = str(self.values["kind"]), str(self.values["status"])
        after_commit(conn, functools.partial(metrics.job_submitted, kind))
        if status in TERMINAL:
            after_commit(conn, functools.partial(metrics.job_finished, kind, status, 0.0))


@dataclass(eq=False)
class _Tracked:
    """Column values of one row; ``changes()`` are those assigned a different value since.

    Like the ORM's JSON columns, a value changed in place (not assigned) goes unseen.
    """

    _loaded: tuple[Any, ...] = field(init=False, repr=False)
    _names: ClassVar[tuple[str, ...]]

    def __post_init__(self) -> None:
        self._loaded = tuple(getattr(self, name) for name in self._names)

    def changes(self) -> dict[str, Any]:
        changed = {}
        for name, before in zip(self._names, self._loaded, strict=True):
            now = getattr(self, name)
            # As the ORM would, but 1 and True (equal in Python) are not the same JSON.
            if now is not before and (now != before or type(now) is not type(before)):
                changed[name] = now
        return changed


@dataclass(eq=False)
class LockedJob(_Tracked):
    """The columns of a job row the runner reads or writes."""

    id: str
    kind: str
    queue: str
    status: str
    params: dict[str, Any]
    result: Any
    error: dict[str, Any] | None
    progress_done: int
    progress_total: int
    progress_message: str | None
    cancel_requested: bool
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_run_at: datetime | None
    notify: dict[str, Any] | None
    submitted_by: str | None
    created_at: datetime
    parent_id: str | None
    parent_step: str | None


@dataclass(eq=False)
class LockedStep(_Tracked):
    """The columns of a step row the runner reads or writes."""

    id: int
    name: str
    position: int
    after: list[str]
    status: str
    attempts: int
    output: Any
    error: dict[str, Any] | None
    state: dict[str, Any]
    due_at: datetime | None
    wait_reason: str | None
    lease_owner: str | None
    lease_until: datetime | None
    first_attempt_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


def _names(cls: type[_Tracked]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


LockedJob._names = _names(LockedJob)
LockedStep._names = _names(LockedStep)

_SELECT_JOB = (
    select(*(JOBS.c[name] for name in LockedJob._names))
    .where(JOBS.c.id == bindparam("job_id"))
    .with_for_update()
)
_SELECT_STEPS = (
    select(*(STEPS.c[name] for name in LockedStep._names))
    .where(STEPS.c.job_id == bindparam("job_id"))
    .order_by(STEPS.c.position)
    .with_for_update()
)
# The SET clause comes from the keys of the values given at execution.
_UPDATE_JOB = update(JOBS).where(JOBS.c.id == bindparam("row_id"))
_UPDATE_STEP = update(STEPS).where(STEPS.c.id == bindparam("row_id"))


@dataclass(eq=False)
class JobRows:
    """A job and its steps (in flow order), locked in this transaction, new history, and
    new jobs to insert with them (a notification of the job's end)."""

    job: LockedJob
    steps: list[LockedStep]
    history: list[dict[str, Any]] = field(default_factory=list)
    #: Jobs inserted by ``save``; their messages are for the caller to send after commit.
    spawned: list[NewRows] = field(default_factory=list)
    #: URL watches the job's waiting steps asked for: (step name, watch), saved by ``save``.
    watches: list[tuple[str, WatchRequest]] = field(default_factory=list)
    #: (job id, queue, due) of a parent whose step ``save`` woke as this child ended:
    #: its message is for the caller to send after commit (the reconciler sends it at
    #: ``due``, ``resend_after`` from now, unless it is confirmed sent before).
    woken: list[tuple[str, str, datetime]] = field(default_factory=list)
    #: Seconds after which a woken parent's message is sent again if not confirmed.
    resend_after: float = 10.0
    #: What counts the transitions made here (``prodinf.metrics``): ``save`` hands it
    #: to the transaction, which calls it once committed.
    on_commit: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def lock(cls, conn: Connection, job_id: str, resend_after: float = 10.0) -> JobRows | None:
        """Lock and read the job row, then its step rows; ``None`` if there is no such job."""
        job = conn.execute(_SELECT_JOB, {"job_id": job_id}).first()
        if job is None:
            return None
        steps = conn.execute(_SELECT_STEPS, {"job_id": job_id}).all()
        return cls(
            LockedJob(*job), [LockedStep(*step) for step in steps], resend_after=resend_after
        )

    def note(
        self, event: str, step: str | None, message: str | None, data: dict[str, Any] | None = None
    ) -> None:
        """Add an event to the job's history (written by ``save``), credentials masked."""
        self.history.append(history_entry(self.job.id, event, step, message, data))

    def _due_now(self, conn: Connection, step: str) -> None:
        """Make ``step``, which has just started to wait, due now, and its message one
        for the caller to send after commit."""
        now = utcnow()
        conn.execute(
            update(STEPS)
            .where(STEPS.c.job_id == self.job.id, STEPS.c.name == step)
            .values(due_at=now)
        )
        conn.execute(update(JOBS).where(JOBS.c.id == self.job.id).values(next_run_at=now))
        self.woken.append((self.job.id, self.job.queue, now + timedelta(seconds=self.resend_after)))

    def by(self, actor: str | None) -> None:
        """Name ``actor`` (who asked) in each history entry not yet written."""
        if actor:
            for entry in self.history:
                entry["data"] = {**(entry.get("data") or {}), "actor": actor}

    def save(self, conn: Connection) -> None:
        """Write the changed columns and the new history events (once, before commit)."""
        changed = self.job.changes()
        if changed:
            conn.execute(_UPDATE_JOB, {"row_id": self.job.id, **changed})
            job = self.job
            if changed.get("status") in TERMINAL:
                now = utcnow()
                due = now + timedelta(seconds=self.resend_after)
                woken = wake_job_watchers(conn, job.id)
                if job.parent_id and job.parent_step:
                    woken.append((job.parent_id, job.parent_step))
                for other, step in woken:
                    queue = wake_step(conn, other, step, now, due)
                    if queue is not None:
                        self.woken.append((other, queue, due))
        steps = [(step.id, changed) for step in self.steps if (changed := step.changes())]
        if len(steps) == 1:
            step_id, changed = steps[0]
            conn.execute(_UPDATE_STEP, {"row_id": step_id, **changed})
        elif steps:  # a step recorded and the next one claimed: one UPDATE for both
            columns = tuple(tuple(changed) for _, changed in steps)
            values = {f"row_{i}": step_id for i, (step_id, _) in enumerate(steps)}
            for i, (_, changed) in enumerate(steps):
                values.update((f"{name}_{i}", value) for name, value in changed.items())
            conn.execute(_update_steps(columns), values)
        for new in self.spawned:
            new.insert(conn)
        if self.watches:
            for step, watch in self.watches:
                if not register(conn, self.job.id, step, watch):
                    self._due_now(conn, step)  # the job it would wait for has ended
            self.watches = []
        if self.history:
            insert_rows(conn, HISTORY, self.history)
            self.history = []
        for then in self.on_commit:
            after_commit(conn, then)
        self.on_commit = []


@functools.lru_cache(maxsize=256)
def _update_steps(columns: tuple[tuple[str, ...], ...]) -> Update:
    """One UPDATE of several steps, row ``i`` setting the ``columns[i]`` (its own values).

    ``SET c = CASE WHEN id = :row_0 THEN :c_0 ... ELSE c END`` for each column,
    ``WHERE id IN (:row_0, ...)``; parameters ``row_<i>`` and ``<column>_<i>``.
    """
    rows = range(len(columns))
    ids = [bindparam(f"row_{i}", type_=STEPS.c.id.type) for i in rows]
    assign = {}
    for name in sorted({name for names in columns for name in names}):
        column = STEPS.c[name]
        whens = [
            (STEPS.c.id == ids[i], bindparam(f"{name}_{i}", type_=column.type))
            for i in rows
            if name in columns[i]
        ]
        assign[name] = case(*whens, else_=column)
    return update(STEPS).where(STEPS.c.id.in_(ids)).values(assign)


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (each with the same columns) into ``table`` in one statement.

    One multi-row ``INSERT ... VALUES (...), (...)``: an executemany costs a
    round trip per row on some drivers, and SQLAlchemy compiles a multi-row
    ``insert().values()`` anew each time. This one is built once per dialect,
    table, columns and number of rows, with typed parameters ``<column>_<row>``.
    """
    columns = tuple(rows[0])
    values = {f"{name}_{i}": row[name] for i, row in enumerate(rows) for name in columns}
    conn.execute(_insert(conn.dialect, table, columns, len(rows)), values)


@functools.lru_cache(maxsize=256)
def _insert(dialect: Dialect, table: Table, columns: tuple[str, ...], rows: int) -> TextClause:
    quote = dialect.identifier_preparer
    tuples = ", ".join(
        "(" + ", ".join(f":{name}_{i}" for name in columns) + ")" for i in range(rows)
    )
    sql = (
        f"INSERT INTO {quote.format_table(table)} "
        f"({', '.join(quote.format_column(table.c[name]) for name in columns)}) VALUES {tuples}"
    )
    return text(sql).bindparams(
        *(
            bindparam(f"{name}_{i}", type_=table.c[name].type)
            for i in range(rows)
            for name in columns
        )
    )
