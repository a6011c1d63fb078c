"""A job's two statements per transition on PostgreSQL, run through psycopg itself.

A transition is little more than two statements, one that locks and reads a job's
rows and one that writes what changed (:class:`prodinf.store.rows.JobRows`), and
SQLAlchemy's execution around each cost a worker as much CPU as the rest of the
transition: the compiled-cache lookup, a result's metadata (a description of 36
columns for each lock), a type conversion call per value read. Here each statement
is compiled by SQLAlchemy once per shape, with PostgreSQL's own ``$n`` parameters,
then run as a prepared statement on the transaction's own connection
(``psycopg.RawCursor``) and its rows read as plain tuples. Nothing else changes:
the same transaction, the same rows locked in the same order, and an error is
raised as SQLAlchemy raises it (a lost connection invalidated), so the store's
error handling sees what it always saw.

Used with the psycopg driver only (:func:`usable`); elsewhere ``JobRows`` runs
its statements through SQLAlchemy.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sqlalchemy import (
    BindParameter,
    ClauseElement,
    Table,
    TextClause,
    bindparam,
    case,
    cast,
    insert,
    literal_column,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.sql.compiler import SQLCompiler

from prodinf.store.models import HISTORY, JOBS, STEPS, WATCHES
from prodinf.store.types import UTCDateTime

__all__ = [
    "Locked",
    "Prepared",
    "lock",
    "prepared",
    "run",
    "update_steps",
    "usable",
    "write_at_once",
    "write_unless_changed",
]

_PARAM = re.compile(r"%\((\w+)\)s|%%")
#: Plain SQL with ``:name`` parameters and no casts (what ``text`` takes).
_NAMED = DefaultDialect(paramstyle="named")


def usable(conn: Connection) -> bool:
    """Whether ``conn`` is a PostgreSQL (13 or later) connection through psycopg (3)."""
    dialect = conn.dialect
    return (
        dialect.name == "postgresql"
        and dialect.driver == "psycopg"
        and (dialect.server_version_info or (0,)) >= (13,)
    )


@dataclass(frozen=True)
class Prepared:
    """A statement compiled for psycopg's raw cursor: its SQL with ``$n`` parameters,
    the names they stand for in order, and how each value is converted first."""

    sql: bytes
    names: tuple[str, ...]
    convert: Mapping[str, Callable[[Any], Any]]

    def parameters(self, values: Mapping[str, Any]) -> list[Any]:
        convert = self.convert
        return [
            convert[name](values[name]) if name in convert else values[name] for name in self.names
        ]


def prepared(statement: ClauseElement, dialect: Dialect) -> Prepared:
    """``statement`` compiled by SQLAlchemy for ``dialect`` (its types' conversions
    included), its ``%(name)s`` parameters numbered ``$1``, ``$2``... in order."""
    return _numbered(*_compiled(statement, dialect))


def _compiled(
    statement: ClauseElement, dialect: Dialect
) -> tuple[str, dict[str, Callable[[Any], Any]]]:
    """The SQL of ``statement`` for ``dialect`` and the conversion of each parameter."""
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    processors = compiled._bind_processors  # what SQLAlchemy applies itself
    return compiled.string, {name: p for name, p in processors.items() if callable(p)}


def _numbered(sql: str, convert: dict[str, Callable[[Any], Any]]) -> Prepared:
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:  # "%%": a literal percent sign
            return "%"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    numbered = _PARAM.sub(number, sql)
    return Prepared(
        numbered.encode(), tuple(names), {name: convert[name] for name in names if name in convert}
    )


def run(conn: Connection, statement: Prepared, values: Mapping[str, Any]) -> Any:
    """Execute ``statement`` with ``values`` in the transaction of ``conn``; the psycopg
    cursor, to fetch from. A database error is raised as SQLAlchemy would raise it."""
    import psycopg

    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    parameters = statement.parameters(values)
    cursor = psycopg.RawCursor(raw)
    try:
        cursor.execute(statement.sql, parameters, prepare=True)
    except psycopg.Error as exc:
        conn._handle_dbapi_exception(  # wrapped, a lost connection invalidated
            exc, statement.sql.decode(), parameters, None, None
        )
    return cursor


# -- the lock ----------------------------------------------------------------

#: The transaction that writes a row now: the version it gives it (PostgreSQL 13+).
_XID = "pg_current_xact_id()::xid::text"


def _version(table: Table) -> Any:
    """A row's version: ``xmin``, the transaction that last wrote it (a lock does not)."""
    return literal_column(f"{table.name}.xmin::text")


@functools.cache
def _lock_statement(job: tuple[str, ...], steps: tuple[str, ...], locking: bool) -> Any:
    # The job row and its steps locked and read in one statement: its locking clause
    # locks the rows of each row returned in FROM order, so the job row is locked
    # before any step (the order everyone locks them in), and a row changed by a
    # transaction it waited for is read as that one left it. The job's columns come
    # with its first step only (the others read NULL), so they are decoded once.
    # No ORDER BY: under READ COMMITTED a locking query may return rows out of it.
    # Without ``locking``, a plain read (no transaction id taken for it).
    first = STEPS.c.position == literal_column("0")
    query = select(
        *(case((first, JOBS.c[name])).label(f"job_{name}") for name in job),
        *(STEPS.c[name] for name in steps),
        _version(JOBS).label("job_version"),
        _version(STEPS).label("step_version"),
        literal_column(_XID if locking else "NULL").label("xid"),
    ).select_from(JOBS.join(STEPS, STEPS.c.job_id == JOBS.c.id))
    query = query.where(JOBS.c.id == bindparam("job_id"))
    return query.with_for_update() if locking else query


@functools.cache
def _lock(
    dialect: Dialect, job: tuple[str, ...], steps: tuple[str, ...], locking: bool
) -> tuple[Prepared, tuple[int, ...]]:
    columns = [JOBS.c[name] for name in job] + [STEPS.c[name] for name in steps]
    aware = tuple(i for i, c in enumerate(columns) if isinstance(c.type, UTCDateTime))
    return prepared(_lock_statement(job, steps, locking), dialect), aware


@dataclass
class Locked:
    """A job's row and its step rows as :func:`lock` read them."""

    #: The ``job`` columns of the job row.
    job: Sequence[Any]
    #: The ``steps`` columns of each step row, in no order.
    steps: list[Sequence[Any]]
    #: Each row's version: ``None`` for the job row, a step row's id for it.
    versions: dict[int | None, str]
    #: The version this transaction gives the rows it writes (``None``: not locked).
    xid: str | None


def lock(
    conn: Connection,
    job_id: str,
    job: tuple[str, ...],
    steps: tuple[str, ...],
    *,
    locking: bool = True,
) -> Locked | None:
    """Lock and read job ``job_id``'s row and its step rows: the ``job`` columns of
    the one and the ``steps`` columns of each (whose first must be ``id``), values
    as SQLAlchemy reads them (times aware, in UTC). ``None`` when there is no such
    job or it has no step at position 0: the caller reads it as elsewhere. Without
    ``locking``, only read them (with their versions)."""
    statement, aware = _lock(conn.dialect, job, steps, locking)
    found = run(conn, statement, {"job_id": job_id}).fetchall()
    n, m = len(job), len(job) + len(steps)
    head: Sequence[Any] | None = None
    rows: list[Sequence[Any]] = []
    versions: dict[int | None, str] = {}
    for row in found:
        if any(row[i] is not None for i in aware):
            row = list(row)
            for i in aware:
                if row[i] is not None:
                    row[i] = row[i].replace(tzinfo=UTC)
        if row[0] is not None:
            head = row[:n]
        rows.append(row[n:m])
        versions[None] = row[m]
        versions[row[n]] = row[m + 1]
    if head is None:
        return None
    return Locked(head, rows, versions, found[0][m + 2])


# -- the write ---------------------------------------------------------------


def step_values(steps: list[tuple[int, dict[str, Any]]], prefix: str = "") -> dict[str, Any]:
    """The parameters of :func:`update_steps` for each (step id, changed columns)."""
    values: dict[str, Any] = {f"{prefix}row_{i}": step_id for i, (step_id, _) in enumerate(steps)}
    for i, (_, diff) in enumerate(steps):
        values.update((f"{prefix}{name}_{i}", value) for name, value in diff.items())
    return values


@functools.lru_cache(maxsize=256)
def update_steps(columns: tuple[tuple[str, ...], ...], prefix: str = "") -> Any:
    """One UPDATE of several steps, row ``i`` setting the ``columns[i]`` (its own values).

    ``SET c = CASE WHEN id = :row_0 THEN :c_0 ... ELSE c END`` for each column,
    ``WHERE id IN (:row_0, ...)``; parameters ``<prefix>row_<i>`` and
    ``<prefix><column>_<i>``.
    """
    rows = range(len(columns))
    ids = [bindparam(f"{prefix}row_{i}", type_=STEPS.c.id.type) for i in rows]
    assign = {}
    for name in sorted({name for names in columns for name in names}):
        column = STEPS.c[name]
        whens = [
            (STEPS.c.id == ids[i], bindparam(f"{prefix}{name}_{i}", type_=column.type))
            for i in rows
            if name in columns[i]
        ]
        assign[name] = case(*whens, else_=column)
    return update(STEPS).where(STEPS.c.id.in_(ids)).values(assign)


def write_at_once(
    conn: Connection,
    job_id: str,
    job: dict[str, Any],
    steps: list[tuple[int, dict[str, Any]]],
    history: list[dict[str, Any]],
    *,
    watch: str | None = None,
) -> Any:
    """The job's changed columns, its steps' and its new history in one statement,
    one round trip instead of three: the last of them carries the others as
    data-modifying CTEs (``WITH w0 AS (UPDATE ...) INSERT ...``), each run once.
    They write three tables, the rows updated already locked by the lock. With
    ``watch`` (a watch's ``url_key``), the same statement then reads that watch's id
    (``None`` if there is none), which it returns: a job's end looks for its watchers
    without another round trip, as a statement after the lock, so it sees every
    watch committed before."""
    values, shape = _values(job_id, job, steps, history)
    if watch is not None:
        values["watch_key"] = watch
    elif not values:
        return None
    shape = (*shape, watch is not None)
    if usable(conn):
        cursor = run(conn, _written(conn.dialect, *shape), values)
        found = cursor.fetchone() if watch is not None else None
        return None if found is None else found[0]
    result = conn.execute(_written_at_once(*shape), values)
    return result.scalar() if watch is not None else None


def write_unless_changed(
    conn: Connection,
    job_id: str,
    versions: Mapping[int | None, str],
    job: dict[str, Any],
    steps: list[tuple[int, dict[str, Any]]],
    history: list[dict[str, Any]],
) -> str | None:
    """On a connection in autocommit (``JobStore.single``): what ``write_at_once``
    writes, in one statement that commits on its own, if and only if the job's rows
    are still at ``versions`` (as ``lock`` read them, or as this runner last wrote
    them). Returns the version of the rows written, or ``None``: some row was written
    since (by a heartbeat, a cancel, a wake, another worker), nothing is written, and
    the caller locks and reads the rows again. The statement locks the rows it checks
    (the job row first, as everyone does), so nothing comes between check and write.
    """
    values, shape = _values(job_id, job, steps, history)
    values["guard_job"] = job_id
    values["guard_job_version"] = versions[None]
    values["guard_steps"] = _step_versions(versions)
    ok, xid = run(conn, _guarded(conn.dialect, *shape), values).fetchone()
    return str(xid) if ok else None


def _step_versions(versions: Mapping[int | None, str]) -> str:
    return ",".join(f"{step}:{version}" for step, version in sorted(_steps_of(versions)))


def _steps_of(versions: Mapping[int | None, str]) -> list[tuple[int, str]]:
    return [(step, version) for step, version in versions.items() if step is not None]


def _values(
    job_id: str,
    job: dict[str, Any],
    steps: list[tuple[int, dict[str, Any]]],
    history: list[dict[str, Any]],
) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """The parameters of a write, and its shape (what its statement is built for)."""
    values: dict[str, Any] = {}
    if job:
        values.update({f"job_{name}": value for name, value in job.items()})
        values["job_row"] = job_id
    if steps:
        values.update(step_values(steps, "step_"))
    for i, entry in enumerate(history):
        values.update((f"history_{name}_{i}", value) for name, value in entry.items())
    shape = (
        tuple(job),
        tuple(tuple(diff) for _, diff in steps),
        tuple(history[0]) if history else (),
        len(history),
    )
    return values, shape


#: What each part of a guarded write is conditional on.
_OK = text("(SELECT ok FROM ok)")


@functools.lru_cache(maxsize=256)
def _guarded(
    dialect: Dialect,
    job: tuple[str, ...],
    steps: tuple[tuple[str, ...], ...],
    history: tuple[str, ...],
    entries: int,
) -> Prepared:
    """The statement of ``write_unless_changed`` for this shape of write."""
    parts: list[Any] = [
        text(
            f"SELECT {JOBS.name}.xmin::text AS jv, {STEPS.name}.id AS sid, "
            f"{STEPS.name}.xmin::text AS sv FROM {JOBS.name} JOIN {STEPS.name} "
            f"ON {STEPS.name}.job_id = {JOBS.name}.id WHERE {JOBS.name}.id = :guard_job "
            "FOR UPDATE"
        ).bindparams(bindparam("guard_job", type_=JOBS.c.id.type)),
        text(
            "SELECT coalesce(min(jv) = :guard_job_version AND "
            "string_agg(sid || ':' || sv, ',' ORDER BY sid) = :guard_steps, false) AS ok "
            "FROM locked"
        ).bindparams(bindparam("guard_job_version"), bindparam("guard_steps")),
    ]
    if job:
        set_job = {name: bindparam(f"job_{name}", type_=JOBS.c[name].type) for name in job}
        parts.append(update(JOBS).where(JOBS.c.id == bindparam("job_row"), _OK).values(set_job))
    if steps:
        parts.append(update_steps(steps, "step_").where(_OK))
    if entries:
        rows = [
            select(
                *(
                    cast(
                        bindparam(f"history_{name}_{i}", type_=HISTORY.c[name].type),
                        HISTORY.c[name].type,
                    )
                    for name in history
                )
            ).where(_OK)
            for i in range(entries)
        ]
        parts.append(
            insert(HISTORY).from_select(list(history), union_all(*rows) if entries > 1 else rows[0])
        )
    sqls: list[str] = []
    convert: dict[str, Callable[[Any], Any]] = {}
    for part in parts:  # each compiled for PostgreSQL here: no second pass through text()
        sql, converts = _compiled(part, dialect)
        sqls.append(sql)
        convert.update(converts)
    names = ["locked", "ok"] + [f"w{i}" for i in range(len(parts) - 2)]
    statement = (
        "WITH "
        + ", ".join(f"{name} AS ({sql})" for name, sql in zip(names, sqls, strict=True))
        + f" SELECT ok, {_XID} FROM ok"
    )
    return _numbered(statement, convert)


@functools.lru_cache(maxsize=256)
def _written(dialect: Dialect, *shape: Any) -> Prepared:
    return prepared(_written_at_once(*shape), dialect)


@functools.lru_cache(maxsize=256)
def _written_at_once(
    job: tuple[str, ...],
    steps: tuple[tuple[str, ...], ...],
    history: tuple[str, ...],
    entries: int,
    watch: bool,
) -> TextClause:
    """The statement of ``write_at_once``, for these columns and number of entries.

    Text with typed parameters: SQLAlchemy caches no compiled form of a statement
    with DML in its CTEs, so it would compile one for each transition.
    """
    parts = []
    if job:
        set_job = {name: bindparam(f"job_{name}", type_=JOBS.c[name].type) for name in job}
        parts.append(update(JOBS).where(JOBS.c.id == bindparam("job_row")).values(set_job))
    if steps:
        parts.append(update_steps(steps, "step_"))
    sqls: list[str] = []
    binds: list[BindParameter[Any]] = []
    for part in parts:
        compiled = part.compile(dialect=_NAMED)
        sqls.append(compiled.string)
        binds += compiled.binds.values()
    if entries:
        names = [[f"history_{name}_{i}" for name in history] for i in range(entries)]
        quote = _NAMED.identifier_preparer
        sqls.append(
            f"INSERT INTO {quote.format_table(HISTORY)} "
            f"({', '.join(quote.format_column(HISTORY.c[name]) for name in history)}) VALUES "
            + ", ".join("(" + ", ".join(f":{n}" for n in row) + ")" for row in names)
        )
        binds += [
            bindparam(n, type_=HISTORY.c[name].type)
            for row in names
            for n, name in zip(row, history, strict=True)
        ]
    if watch:
        sqls.append(f"SELECT id FROM {WATCHES.name} WHERE url_key = :watch_key")
        binds.append(bindparam("watch_key", type_=WATCHES.c.url_key.type))
    *first, last = sqls
    if first:
        last = "WITH " + ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(first)) + " " + last
    return text(last).bindparams(*binds)
