"""A job's rows as one transaction sees them: locked and read once, written once.

Every change of a job's status goes through :class:`JobRows`: the runner records a
step's outcome and claims the next step in one transaction, and cancel and retry
change a job the same way. It reads the job row and its step rows at the start (the job row
first, then its steps, ``FOR UPDATE``: the order everyone locks them in), works
on these plain copies, and at the end writes what changed: one ``UPDATE`` per
changed table and one ``INSERT`` for all the history events. Core statements, not
the ORM's unit of work: a worker spends most of its time here.

On PostgreSQL each round trip counts (a transition is little else): the job and its
steps are locked and read in one statement, and what changed is written in one
(``WITH ... UPDATE ... INSERT``), as are a new job's rows, each through psycopg itself
(:mod:`prodinf.store.pgrows`). And a runner writes most transitions ahead
(:meth:`JobRows.save_unless_changed`): one statement on the rows as it last left them,
written only if no one wrote them since. A 4-step job's submission and run cost 12
round trips (42 with a statement per table, 23 with one lock and one write a transition).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, ClassVar, cast

from sqlalchemy import Table, TextClause, bindparam, select, text, update
from sqlalchemy.engine import Connection, Dialect

from prodinf import metrics
from prodinf.redact import redact, redact_text
from prodinf.status import TERMINAL
from prodinf.store import pgrows
from prodinf.store.children import wake_step
from prodinf.store.models import HISTORY, JOBS, STEPS
from prodinf.store.repository import JobStore, Summarised, after_commit, job_summary
from prodinf.store.types import utcnow
from prodinf.store.watches import (
    WatchRequest,
    job_watch_key,
    register,
    wake_job_watchers,
    wake_watchers_of,
)

__all__ = [
    "JobRows",
    "LockedJob",
    "LockedStep",
    "NewRows",
    "history_entry",
    "insert_all",
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
        """The job as lists show it (what a submission answers): read from its values,
        not an ORM ``JobRow`` (whose instrumentation costs more than the rest)."""
        return job_summary(cast(Summarised, SimpleNamespace(finished_at=None, **self.values)))

    def insert(self, conn: Connection) -> None:
        """Insert the rows: Core statements, one per table, or one for all three on
        PostgreSQL (the ORM's unit of work would cost more than the rest of a
        submission). The one place a job is created: counted here once committed
        (and as ended, if it starts out ended)."""
        history = [self.history, *self.more_history]
        insert_all(conn, [(JOBS, [self.values]), (STEPS, self.steps), (HISTORY, history)])
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
    #: The values of ``_names`` as a tuple (one C call: a worker makes five a job).
    _values: ClassVar[operator.attrgetter[Any]]

    def __post_init__(self) -> None:
        self._loaded = self._values(self)

    def changes(self) -> dict[str, Any]:
        changed = {}
        for name, before, now in zip(self._names, self._loaded, self._values(self), strict=True):
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


for _cls in (LockedJob, LockedStep):
    _cls._names = _names(_cls)
    _cls._values = operator.attrgetter(*_cls._names)

_POSITION = operator.attrgetter("position")
#: A job's watch not looked for yet (``save`` on a store that reads it apart).
_UNREAD = object()

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
# PostgreSQL: the job row and its steps locked and read in one statement (one round
# trip). Its locking clause locks the rows of each row returned in FROM order, so the
# job row is locked before any step (the order everyone locks them in), and a row
# changed by a transaction it waited for is read as that one left it. No ORDER BY:
# under READ COMMITTED a locking query may return rows out of it; ``lock`` sorts them.
_SELECT_BOTH = (
    select(
        *(JOBS.c[name] for name in LockedJob._names), *(STEPS.c[name] for name in LockedStep._names)
    )
    .select_from(JOBS.join(STEPS, STEPS.c.job_id == JOBS.c.id))
    .where(JOBS.c.id == bindparam("job_id"))
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
    #: PostgreSQL: each row's version (``pgrows.Locked.versions``) once ``save`` has
    #: written them, for the next transition to write without locking them first
    #: (``resumed``); ``None`` when unknown.
    versions: dict[int | None, str] | None = None
    #: PostgreSQL: the version this transaction gives the rows it writes.
    xid: str | None = None

    @classmethod
    def lock(cls, conn: Connection, job_id: str, resend_after: float = 10.0) -> JobRows | None:
        """Lock and read the job row, then its step rows; ``None`` if there is no such job."""
        if pgrows.usable(conn):  # one statement, through psycopg itself
            found = pgrows.lock(conn, job_id, LockedJob._names, LockedStep._names)
            if found is not None:  # else no such job, or one without steps: as elsewhere
                return cls._found(found, resend_after)
        elif conn.dialect.name == "postgresql":
            both = conn.execute(_SELECT_BOTH, {"job_id": job_id}).all()
            if both:
                n = len(LockedJob._names)
                ordered = sorted((LockedStep(*row[n:]) for row in both), key=_POSITION)
                return cls(LockedJob(*both[0][:n]), ordered, resend_after=resend_after)
        job = conn.execute(_SELECT_JOB, {"job_id": job_id}).first()
        if job is None:
            return None
        rows = conn.execute(_SELECT_STEPS, {"job_id": job_id}).all()
        return cls(LockedJob(*job), [LockedStep(*step) for step in rows], resend_after=resend_after)

    @classmethod
    def read(cls, store: JobStore, job_id: str, resend_after: float = 10.0) -> JobRows | None:
        """PostgreSQL: the job's rows read without a lock, with their versions, for a
        first transition written ahead (:meth:`save_unless_changed`). ``None`` elsewhere,
        or when there is no such job: the caller locks them."""
        if store.dialect != "postgresql":
            return None
        with store.single() as conn:
            if not pgrows.usable(conn):
                return None
            found = pgrows.lock(conn, job_id, LockedJob._names, LockedStep._names, locking=False)
        return None if found is None else cls._found(found, resend_after)

    @classmethod
    def _found(cls, found: pgrows.Locked, resend_after: float) -> JobRows:
        """The rows ``pgrows.lock`` read (locked or not), with their versions."""
        ordered = sorted((LockedStep(*row) for row in found.steps), key=_POSITION)
        rows = cls(LockedJob(*found.job), ordered, resend_after=resend_after)
        rows.versions, rows.xid = found.versions, found.xid
        return rows

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
        steps = [(step.id, diff) for step in self.steps if (diff := step.changes())]
        ending = changed.get("status") in TERMINAL
        watch: Any = _UNREAD
        if conn.dialect.name == "postgresql":  # all three in one statement
            key = job_watch_key(self.job.id) if ending else None  # and its watch read
            watch = pgrows.write_at_once(conn, self.job.id, changed, steps, self.history, watch=key)
            self._written(bool(changed), steps, self.xid)
            self.history, steps = [], []
        elif changed:
            conn.execute(_UPDATE_JOB, {"row_id": self.job.id, **changed})
        if ending or self.spawned or self.watches:
            self.versions = None  # more is written than the rows: read them again next
        if ending:
            job = self.job
            now = utcnow()
            due = now + timedelta(seconds=self.resend_after)
            if watch is _UNREAD:
                woken = wake_job_watchers(conn, job.id)
            else:
                woken = wake_watchers_of(conn, watch)
            if job.parent_id and job.parent_step:
                woken.append((job.parent_id, job.parent_step))
            for other, step in woken:
                queue = wake_step(conn, other, step, now, due)
                if queue is not None:
                    self.woken.append((other, queue, due))
        if len(steps) == 1:
            step_id, diff = steps[0]
            conn.execute(_UPDATE_STEP, {"row_id": step_id, **diff})
        elif steps:  # a step recorded and the next one claimed: one UPDATE for both
            columns = tuple(tuple(diff) for _, diff in steps)
            conn.execute(pgrows.update_steps(columns), pgrows.step_values(steps))
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

    def _written(self, job: bool, steps: list[tuple[int, dict[str, Any]]], xid: str | None) -> None:
        """Give the rows just written (the job row if ``job``) version ``xid``."""
        if self.versions is None or xid is None:
            self.versions = None
            return
        if job:
            self.versions[None] = xid
        for step_id, _ in steps:
            self.versions[step_id] = xid

    def resumed(self) -> JobRows | None:
        """Once this transaction has committed: the rows as it left them, for the next
        transition to change and write with :meth:`save_unless_changed`, without
        locking and reading them again. ``None`` when their versions are unknown (not
        PostgreSQL, or it wrote more than them)."""
        if self.versions is None or self.spawned or self.woken or self.watches:
            return None
        for row in (self.job, *self.steps):
            row._loaded = row._values(row)
        return JobRows(
            self.job, self.steps, resend_after=self.resend_after, versions=dict(self.versions)
        )

    def save_unless_changed(self, store: JobStore) -> bool:
        """Write the changed columns and the new history in one statement that commits
        on its own, if no row of the job was written since the versions known
        (``resumed``); ``False`` if one was: nothing is written, and the caller locks
        and reads the rows again. Only for a change ``save`` would write in one
        statement: no new jobs, watches or woken jobs, and not the job's end."""
        assert self.versions is not None and not (self.spawned or self.watches or self.woken)
        changed = self.job.changes()
        assert changed.get("status") not in TERMINAL
        steps = [(step.id, diff) for step in self.steps if (diff := step.changes())]
        with store.single() as conn:
            xid = pgrows.write_unless_changed(
                conn, self.job.id, self.versions, changed, steps, self.history
            )
            if xid is None:
                return False
            for then in self.on_commit:
                after_commit(conn, then)
        self.history, self.on_commit = [], []
        self._written(bool(changed), steps, xid)
        return True


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (each with the same columns) into ``table`` in one statement.

    One multi-row ``INSERT ... VALUES (...), (...)``: an executemany costs a
    round trip per row on some drivers, and SQLAlchemy compiles a multi-row
    ``insert().values()`` anew each time. This one is built once per dialect,
    table, columns and number of rows, with typed parameters ``<column>_<row>``.
    """
    insert_all(conn, [(table, rows)])


def insert_all(
    conn: Connection, tables: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]]
) -> None:
    """Insert the rows of each (table, rows), in that order, as :func:`insert_rows` does.

    On PostgreSQL in one statement (one round trip), the ``INSERT`` s before the last
    as data-modifying CTEs: a row's foreign keys are checked at the end of the
    statement, so a step may refer to the job inserted beside it. Elsewhere one
    statement per table.
    """
    parts = [(table, rows) for table, rows in tables if rows]
    if not parts:
        return
    if conn.dialect.name != "postgresql" and len(parts) > 1:
        for part in parts:
            insert_all(conn, [part])
        return
    shape = tuple((table, tuple(rows[0]), len(rows)) for table, rows in parts)
    values = {
        f"{_prefix(p, len(parts))}{name}_{i}": row[name]
        for p, (_, columns, _) in enumerate(shape)
        for i, row in enumerate(parts[p][1])
        for name in columns
    }
    if pgrows.usable(conn):  # a prepared statement through psycopg itself
        pgrows.run(conn, _insert_prepared(conn.dialect, shape), values)
    else:
        conn.execute(_insert(conn.dialect, shape), values)


@functools.lru_cache(maxsize=256)
def _insert_prepared(
    dialect: Dialect, shape: tuple[tuple[Table, tuple[str, ...], int], ...]
) -> pgrows.Prepared:
    return pgrows.prepared(_insert(dialect, shape), dialect)


def _prefix(part: int, parts: int) -> str:
    """What the parameters of the ``part`` th of ``parts`` INSERTs begin with."""
    return f"t{part}_" if parts > 1 else ""


@functools.lru_cache(maxsize=256)
def _insert(dialect: Dialect, shape: tuple[tuple[Table, tuple[str, ...], int], ...]) -> TextClause:
    """The statement of ``insert_all`` for each (table, columns, number of rows)."""
    quote = dialect.identifier_preparer
    inserts, binds = [], []
    for part, (table, columns, rows) in enumerate(shape):
        prefix = _prefix(part, len(shape))
        tuples = ", ".join(
            "(" + ", ".join(f":{prefix}{name}_{i}" for name in columns) + ")" for i in range(rows)
        )
        inserts.append(
            f"INSERT INTO {quote.format_table(table)} "
            f"({', '.join(quote.format_column(table.c[name]) for name in columns)}) VALUES {tuples}"
        )
        binds += [
            bindparam(f"{prefix}{name}_{i}", type_=table.c[name].type)
            for i in range(rows)
            for name in columns
        ]
    *first, last = inserts
    if first:
        last = "WITH " + ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(first)) + " " + last
    return text(last).bindparams(*binds)
