"""The job store: connections, transactions, and the queries the portal and CLI read."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import create_engine, func, literal, select, text, union_all
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from prodinf.exceptions import Conflict, NotFound, StoreUnavailable, Unstorable
from prodinf.files import PRIVATE_FILE, PRIVATE_FOLDER, private_file, tighten
from prodinf.redact import redact, redact_text
from prodinf.status import TERMINAL, JobStatus, StepStatus
from prodinf.store.models import HistoryRow, JobRow, StepRow, WatcherRow, WatchRow
from prodinf.store.pooling import ping_when_idle
from prodinf.store.search import JobSearch, duration_seconds, search_jobs
from prodinf.store.sqlite import configure_sqlite
from prodinf.store.types import utcnow

#: The fewest first characters of a job's id that name it (when no other id starts so).
MIN_PREFIX = 6
_ID_CHARS = frozenset("0123456789abcdef-")

__all__ = ["JobStore", "Summarised", "after_commit", "job_detail", "job_summary"]

#: Where a connection keeps what to do once its transaction commits.
_AFTER_COMMIT = "prodinf_after_commit"

log = logging.getLogger(__name__)


def after_commit(conn: Connection, then: Callable[[], None]) -> None:
    """Call ``then`` once the transaction of ``conn`` (a ``JobStore.transaction``) has
    committed, never if it rolls back: what counts what it wrote (``prodinf.metrics``)."""
    conn.info.setdefault(_AFTER_COMMIT, []).append(then)


def _committed(done: Iterable[Callable[[], None]]) -> None:
    """Run what ``after_commit`` handed a transaction, now that it has committed."""
    for then in done:
        try:
            then()
        except Exception:  # it counts what was committed; the work is done
            log.warning("after a commit: %r failed", then, exc_info=True)


class Summarised(Protocol):
    """What :func:`job_summary` reads of a job (a ``JobRow``, or a transaction's locked copy)."""

    id: str
    kind: str
    status: str
    progress_done: int
    progress_total: int
    progress_message: str | None
    submitted_by: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class JobStore:
    """A job store on any SQLAlchemy URL: SQLite (embedded), PostgreSQL or MySQL/MariaDB."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        # hide_parameters: a store error ends up in logs and tracebacks, and the
        # values written (params, URLs) may carry credentials.
        # No pool_pre_ping: _ping_when_idle pings only connections idle a while.
        kwargs: dict[str, Any] = {"hide_parameters": True}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                database = Path(parsed.database)
                folder = database.parent
                try:
                    # a new folder private, an existing one as its owner made it
                    folder.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
                    # the store holds every param as given: created 0600 (its -wal and
                    # -shm take its mode), and tightened if an older prodinf left it open
                    private_file(database)
                    for suffix in ("-wal", "-shm", "-journal"):
                        tighten(Path(f"{database}{suffix}"), PRIVATE_FILE)
                except OSError as exc:
                    raise StoreUnavailable(
                        f"job store unavailable (sqlite): cannot create {exc.filename or folder}: "
                        f"{exc.strerror or type(exc).__name__}"
                    ) from exc
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(
                pool_size=pool_size,
                max_overflow=10,
                pool_recycle=3600,
                isolation_level="READ COMMITTED",
            )
            kwargs["connect_args"] = {"connect_timeout": 5}
        self.engine: Engine = create_engine(url, **kwargs)
        ping_when_idle(self.engine)
        #: PostgreSQL: autocommit, and commits that do not wait for the disk (``unhurried``).
        self._unhurried: Engine | None = None
        if self.dialect == "postgresql":
            connect = {"connect_timeout": 5, "options": "-c synchronous_commit=off"}
            self._unhurried = create_engine(
                url,
                hide_parameters=True,
                pool_size=1,
                max_overflow=4,
                pool_recycle=3600,
                isolation_level="AUTOCOMMIT",
                connect_args=connect,
            )
            ping_when_idle(self._unhurried)
        #: PostgreSQL: what ``single`` opens, its connections in autocommit for good (a
        #: worker opens one for each transition: no isolation level set and reset each time).
        self._single: Engine | None = None
        if self.dialect == "postgresql":
            self._single = create_engine(url, **{**kwargs, "isolation_level": "AUTOCOMMIT"})
            ping_when_idle(self._single)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        #: What :meth:`reading` opens: on SQLite a second engine whose transactions
        #: read a snapshot and take no write lock; elsewhere the main one.
        self._reads = self._sessions
        self._reader: Engine | None = None
        if self.dialect == "sqlite":
            configure_sqlite(self.engine)
        if self.dialect == "sqlite" and parsed.database not in (None, "", ":memory:"):
            self._reader = create_engine(url, **kwargs)
            configure_sqlite(self._reader, reads_only=True)
            self._reads = sessionmaker(self._reader, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"JobStore({redact_text(self.url)!r})"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error.

        Connection failures (and lock timeouts, deadlocks) surface as
        ``StoreUnavailable`` (transient); a value the database refuses as bad data
        as ``Unstorable`` (permanent). ``IntegrityError`` passes through for callers
        that expect it (a duplicate idempotency key). No error carries the values
        written.
        """
        with self._errors(), self._sessions.begin() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads (errors as for ``session``).

        On SQLite it reads a snapshot and takes no write lock, so a page or a count
        never holds up a worker's write, however long it reads; it refuses a write.
        Elsewhere it is a :meth:`session`.
        """
        with self._errors(), self._reads.begin() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction on a bare connection, for Core statements without an ORM session.

        Committed on success, rolled back on error; errors as for ``session``. What
        :func:`after_commit` handed it runs once it has committed.
        """
        with self._errors():
            with self.engine.begin() as conn:
                try:
                    yield conn
                finally:  # the connection goes back to the pool: nothing of ours stays on it
                    done = conn.info.pop(_AFTER_COMMIT, ())
            _committed(done)

    @contextmanager
    def single(self) -> Iterator[Connection]:
        """A connection for one statement that is a whole transaction by itself.

        On PostgreSQL it commits on its own, as durably as any commit, in one round
        trip instead of three (``BEGIN``, the statement, ``COMMIT``); elsewhere it is a
        :meth:`transaction`. What :func:`after_commit` handed it runs once it has
        committed; errors as for ``session``.
        """
        if self._single is None:
            with self.transaction() as conn:
                yield conn
            return
        with self._errors(), self._single.connect() as conn:
            try:
                yield conn
            finally:
                done = conn.info.pop(_AFTER_COMMIT, ())
        _committed(done)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Store errors as ``StoreUnavailable``/``Unstorable`` (see ``session``)."""
        try:
            yield
        except DBAPIError as exc:
            if _is_bad_data(exc):
                raise Unstorable(
                    f"the job store ({self.dialect}) refused a value: {type(exc.orig).__name__}"
                ) from exc
            if isinstance(exc, OperationalError) or exc.connection_invalidated:
                raise StoreUnavailable(
                    f"job store unavailable ({self.dialect}): {type(exc.orig).__name__}"
                ) from exc
            raise

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers a query."""
        with self.session() as session:
            session.execute(text("SELECT 1"))

    @contextmanager
    def unhurried(self) -> Iterator[Connection]:
        """A connection for one statement worth no wait for the disk: one whose loss in a
        crash only lets a job be due again soon (a confirmed message's mark). On
        PostgreSQL the statement commits on its own (one round trip) without waiting
        for its WAL to reach the disk; elsewhere it is a :meth:`transaction`."""
        if self._unhurried is None:
            with self.transaction() as conn:
                yield conn
            return
        with self._errors(), self._unhurried.connect() as conn:
            yield conn

    def dispose(self) -> None:
        for engine in (self.engine, self._single, self._unhurried, self._reader):
            if engine is not None:
                engine.dispose()

    def forget_connections(self) -> None:
        """Drop the pooled connections without closing them: in a forked child, whose
        parent still uses them."""
        for engine in (self.engine, self._single, self._unhurried, self._reader):
            if engine is not None:
                engine.dispose(close=False)

    # -- reads --------------------------------------------------------------

    def resolve_id(self, given: str) -> str:
        """The id of the job ``given`` names: its id, or a unique start of it of at
        least :data:`MIN_PREFIX` characters (as pages, mails and tables show them).

        :raises NotFound: no job's id is or starts with ``given``.
        :raises Conflict: several jobs' ids start with it (some are named).
        """
        with self.reading() as session:
            if session.get(JobRow, given) is not None:
                return given
            if len(given) < MIN_PREFIX or not _ID_CHARS.issuperset(given.lower()):
                raise NotFound(
                    f"no job {given[:80]!r}: give its id, or at least {MIN_PREFIX} of its "
                    "first characters",
                    field="id",
                )
            found = session.scalars(
                select(JobRow.id).where(JobRow.id.startswith(given.lower())).limit(4)
            ).all()
        if not found:
            raise NotFound(f"no job's id starts with {given!r}", field="id")
        if len(found) > 1:
            shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
            raise Conflict(
                f"several jobs' ids start with {given!r} ({shown}): give more characters",
                field="id",
            )
        return str(found[0])

    def describe(self, job_id: str) -> dict[str, Any]:
        """A job with its steps and history, as the API and pages show it."""
        with self.reading() as session:
            job = session.get(JobRow, job_id)
            if job is None:
                raise NotFound(f"no job {job_id!r}", field="id")
            steps = session.scalars(
                select(StepRow).where(StepRow.job_id == job_id).order_by(StepRow.position)
            ).all()
            history = session.scalars(
                select(HistoryRow).where(HistoryRow.job_id == job_id).order_by(HistoryRow.id)
            ).all()
            detail = job_detail(job, list(steps), list(history))
            if any(step.status == StepStatus.WAITING for step in steps):
                looks = session.execute(
                    select(WatcherRow.step, WatchRow.url, WatchRow.next_look_at)
                    .join(WatchRow, WatchRow.id == WatcherRow.watch_id)
                    .where(WatcherRow.job_id == job_id)
                ).all()
                _next_looks(detail, {step: (url, at) for step, url, at in looks})
            return detail

    def list_jobs(
        self, *, limit: int = 50, offset: int = 0, **search: Any
    ) -> tuple[list[dict[str, Any]], int]:
        """Jobs that match every filter of ``search`` (:meth:`find_jobs`), a page of
        ``limit`` past ``offset``, and how many match (counted up to ``COUNT_LIMIT``)."""
        page = self.find_jobs(limit=limit, offset=offset, **search)
        return page["items"], page["total"]

    def find_jobs(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        id_prefix: str | None = None,
        text: str | None = None,
        submitted_by: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        sort: str = "created",
        order: str = "desc",
        limit: int = 50,
        offset: int = 0,
        after: str | None = None,
        before: str | None = None,
    ) -> dict[str, Any]:
        """A page of the jobs that match every filter given, newest first unless ``sort``
        (created, updated, duration) and ``order`` (asc, desc) say otherwise: ``items``,
        ``total`` (``total_exact`` false: at least that many), and the cursors ``next``
        and ``previous`` to pass as ``after`` and ``before`` (None at either end). Each
        summary has ``duration_seconds``: how long the job has run, None until it starts.
        What each filter means: :mod:`prodinf.store.search`.

        :raises ValidationError: naming a bad ``sort``, ``order``, cursor, or a date
            without a zone.
        """
        search = JobSearch(
            kind=kind,
            status=status,
            id_prefix=id_prefix,
            text=text,
            submitted_by=submitted_by,
            created_after=created_after,
            created_before=created_before,
            sort=sort,
            order=order,
        )
        now = utcnow()
        with self.reading() as session:
            page = search_jobs(
                session, search, limit=limit, offset=offset, after=after, before=before, now=now
            )
        items = [
            {
                **job_summary(row),
                "duration_seconds": duration_seconds(row.started_at, row.finished_at, now),
            }
            for row in page.rows
        ]
        return {
            "items": items,
            "total": page.total,
            "total_exact": page.exact,
            "next": page.next,
            "previous": page.previous,
        }

    def counts(self, *, limit: int | None = None) -> dict[str, int]:
        """Number of jobs in each status that has any. With ``limit``, each status is
        counted only up to ``limit + 1`` (more than ``limit``), from the status index: a
        page that shows the counts costs no full count of a million jobs."""
        with self.reading() as session:
            if limit is None:
                grouped = select(JobRow.status, func.count()).group_by(JobRow.status)
                return {status: n for status, n in session.execute(grouped)}
            capped = [
                select(literal(str(status)).label("status"), func.count().label("n")).select_from(
                    select(JobRow.id).where(JobRow.status == status).limit(limit + 1).subquery()
                )
                for status in JobStatus
            ]
            rows = session.execute(union_all(*capped))
            return {status: n for status, n in rows if n}


#: MySQL/MariaDB errors about the data written that PyMySQL reports as OperationalError:
#: 3140 invalid JSON text (MySQL), 4025 CHECK constraint failed (MariaDB's JSON_VALID).
_MYSQL_BAD_DATA = frozenset({3140, 4025})


def _is_bad_data(exc: DBAPIError) -> bool:
    """True if the database refused the values written, not the connection or the lock."""
    if isinstance(exc, DataError):
        return True
    if isinstance(exc, OperationalError) and exc.orig is not None and exc.orig.args:
        code = exc.orig.args[0]
        return isinstance(code, int) and code in _MYSQL_BAD_DATA
    return False


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def job_summary(job: Summarised) -> dict[str, Any]:
    """The fields of a job shown in lists."""
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "progress": {
            "done": job.progress_done,
            "total": job.progress_total,
            "message": job.progress_message,
        },
        "submitted_by": job.submitted_by,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "finished_at": _iso(job.finished_at),
    }


def _next_looks(detail: dict[str, Any], watches: dict[str, tuple[str, datetime]]) -> None:
    """Say when each waiting step is next looked at: its URL watch's next look, none for
    a watch on a job of this store (its end wakes the step), else when its wait ends;
    and the job's ``next_look_at``, the soonest of them."""
    soonest: list[str] = []
    for step in detail["steps"]:
        if step["status"] != StepStatus.WAITING:
            continue
        url, at = watches.get(step["name"], ("", None))
        if url.startswith("prodinf:job/"):  # store.watches.JOB_WATCH
            step["next_look_at"] = None
            continue
        step["next_look_at"] = _iso(at) if at is not None else step["due_at"]
        if step["next_look_at"]:
            soonest.append(step["next_look_at"])
    detail["next_look_at"] = min(soonest, default=None)


def job_detail(job: JobRow, steps: list[StepRow], history: list[HistoryRow]) -> dict[str, Any]:
    """Everything about a job: summary, params, steps, result, error and history."""
    return {
        **job_summary(job),
        "queue": job.queue,
        "params": redact(job.params),
        "idempotency_key": job.idempotency_key,
        "started_at": _iso(job.started_at),
        "next_run_at": _iso(job.next_run_at) if job.status not in TERMINAL else None,
        "next_look_at": None,
        "cancel_requested": job.cancel_requested,
        "result": redact(job.result),
        "error": job.error,
        "notify": redact(job.notify),
        "parent": (
            {"id": job.parent_id, "step": job.parent_step} if job.parent_id is not None else None
        ),
        "steps": [
            {
                "name": step.name,
                "status": step.status,
                "after": step.after,
                "attempts": step.attempts,
                "output": redact(step.output),
                "error": step.error,
                "waiting_for": step.wait_reason if step.status == StepStatus.WAITING else None,
                "due_at": _iso(step.due_at) if step.status == StepStatus.WAITING else None,
                "next_look_at": None,
                "started_at": _iso(step.started_at),
                "finished_at": _iso(step.finished_at),
            }
            for step in steps
        ],
        "history": [
            {
                "at": _iso(row.at),
                "event": row.event,
                "step": row.step,
                "message": row.message,
                "data": row.data,
            }
            for row in history
        ],
    }
