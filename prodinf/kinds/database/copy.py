"""``copy_database``: copy a database to another server, verified, resumable after a crash.

Steps (each may run again after a crash and then does only what is left):

``prepare``
    Refuses a target database that already has tables unless ``overwrite`` (then
    drops it), and creates the target database. Records whether *this job*
    created it, so its revert drops only what the job made.
``schema``
    Reflects the source and creates its tables on the target (types adapted
    across engines), with primary keys only (PostgreSQL: none yet).
``data``
    Same engine with the native tools installed: one table per transaction through
    ``mysqldump | mysql`` or ``psql | psql`` (``prodinf.databases.native``).
    Otherwise streams every table in primary-key order, in committed batches; after
    a crash it goes on after the last row the target holds (see
    ``prodinf.databases.transfer``). Progress is shown in rows; a cancel stops it
    and reverts the copy.
``constraints``
    Adds PostgreSQL's primary keys, secondary indexes and foreign keys, and moves
    PostgreSQL sequences past the copied ids.
``verify``
    Compares row counts and per-table checksums of source and target
    (``prodinf.databases.checksum``; the portable form across engines). A
    difference fails the job, naming the tables, and reverts the copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy import Engine, MetaData, NullPool, Table

from prodinf import Flow, Retry, Step, StepContext, job_kind
from prodinf.config import Settings
from prodinf.databases import transfer
from prodinf.databases.checksum import table_stats
from prodinf.databases.native import native_table, native_tools
from prodinf.databases.schema import (
    add_foreign_keys,
    add_indexes,
    add_primary_keys,
    reflect,
    reset_sequences,
    target_metadata,
)
from prodinf.databases.transfer import copy_table, copy_table_postgres, count_rows
from prodinf.databases.uri import DatabaseURI, DatabaseUriField, database_errors
from prodinf.exceptions import PermanentError

__all__ = ["CopyDatabaseParams", "CopyMismatch"]

#: Seconds between progress messages during the data step.
PROGRESS_EVERY = 2.0
#: Seconds between looks at a cancel request during the data step (one small read each):
#: a stop lands within this, not when the copy ends.
CANCEL_EVERY = 0.5

#: Tables loaded at once by the native tools (each pipe is two processes).
NATIVE_PARALLEL = 2

_RETRY = Retry(attempts=3, backoff=5.0)


class CopyMismatch(PermanentError):
    """Raised when the copy's row counts or checksums differ from the source's."""


class CopyDatabaseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    src_uri: DatabaseUriField = Field(
        description="The database to copy: mysql://, mariadb://, postgresql:// or sqlite:///path."
    )
    tgt_uri: DatabaseUriField = Field(
        description="Where to copy it (a database name on the target server, or a SQLite file)."
    )
    overwrite: bool = Field(
        default=False,
        description="Replace a target database that already has tables (default: refuse).",
    )
    batch_rows: int = Field(
        default=20000,
        ge=100,
        le=1_000_000,
        description="Rows per committed batch: the most a crash makes the copy redo.",
    )

    method: Literal["auto", "stream"] = Field(
        default="auto",
        description="auto: same-engine copies through the native tools (mysqldump | mysql, "
        "psql | psql) when installed, else streamed by prodinf; stream: always streamed.",
    )

    @field_validator("tgt_uri")
    @classmethod
    def _not_the_source(cls, value: str, info: ValidationInfo) -> str:
        src = info.data.get("src_uri")
        if src is not None:
            a, b = DatabaseURI.parse(src).url, DatabaseURI.parse(value).url
            if (a.get_backend_name(), a.host, a.port, a.database) == (
                b.get_backend_name(),
                b.host,
                b.port,
                b.database,
            ):
                raise ValueError("the target is the source database")
        return value


class _Side:
    """Both databases of a copy, with engines opened on demand and closed together."""

    def __init__(self, params: CopyDatabaseParams, settings: Settings) -> None:
        # checked at submission, and again here: the files may have changed since
        self.src = DatabaseURI.parse(params.src_uri, field="src_uri").allowed(settings, "src_uri")
        self.tgt = DatabaseURI.parse(params.tgt_uri, field="tgt_uri").allowed(settings, "tgt_uri")
        self.same_engine = self.src.engine_name == self.tgt.engine_name
        self._engines: list[Engine] = []

    def engine(self, uri: DatabaseURI) -> Engine:
        engine = uri.create_engine(poolclass=NullPool)
        self._engines.append(engine)
        return engine

    def close(self) -> None:
        for engine in self._engines:
            engine.dispose()

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Driver errors become prodinf errors naming both (masked) databases."""
        with database_errors(self.tgt, f"{doing} {self.src.masked()} to"):
            yield

    def metadata(self, source: Engine) -> tuple[MetaData, MetaData]:
        md = reflect(source)
        return md, target_metadata(md, self.tgt.engine_name, self.same_engine)


@contextmanager
def _sides(ctx: StepContext[CopyDatabaseParams]) -> Iterator[_Side]:
    side = _Side(ctx.params, ctx.settings)
    try:
        yield side
    finally:
        side.close()


def _prepare(ctx: StepContext[CopyDatabaseParams]) -> dict[str, Any]:
    params = ctx.params
    with _sides(ctx) as side:
        src, tgt = side.src, side.tgt
        if not src.exists():
            raise PermanentError(f"the source {src.masked()} does not exist", field="src_uri")
        tables = src.table_names()
        if not tables:
            raise PermanentError(f"the source {src.masked()} has no tables", field="src_uri")

        def decide() -> dict[str, bool]:
            existed = tgt.exists()
            present = tgt.table_names() if existed else []
            if present and not params.overwrite:
                raise PermanentError(
                    f"the target {tgt.masked()} already exists with {len(present)} tables; "
                    "set overwrite to replace it",
                    field="tgt_uri",
                )
            return {"existed": existed, "replaced": bool(present)}

        decision = ctx.once("target", decide)
        if decision["replaced"]:

            def drop() -> bool:
                tgt.drop()
                return True

            ctx.once("dropped", drop)
        tgt.create()
        ctx.progress(f"copying {len(tables)} tables from {src.masked()} to {tgt.masked()}")
        return {
            "source": src.masked(),
            "target": tgt.masked(),
            "created": not decision["existed"] or decision["replaced"],
            "replaced": decision["replaced"],
        }


def _drop_created(ctx: StepContext[CopyDatabaseParams]) -> None:
    """Revert: drop the database this job created, or else the tables it created."""
    with _sides(ctx) as side:
        if (ctx.output or {}).get("created"):
            side.tgt.drop()
            return
        if not side.tgt.exists():
            return
        engine = side.engine(side.tgt)
        with database_errors(side.tgt, "dropping the copy in"), engine.begin() as conn:
            # The target had no tables when the job began (or it would have been
            # refused): every table in it now is the copy's.
            md = MetaData()
            md.reflect(conn)
            md.drop_all(conn)


def _schema(ctx: StepContext[CopyDatabaseParams]) -> dict[str, Any]:
    with _sides(ctx) as side, side.errors("creating the schema of"):
        source, target = side.engine(side.src), side.engine(side.tgt)
        md, tmd = side.metadata(source)
        with target.begin() as conn:
            tmd.create_all(conn, checkfirst=True)
        return {"tables": [t.name for t in md.sorted_tables]}


def _data(ctx: StepContext[CopyDatabaseParams]) -> dict[str, Any]:
    params = ctx.params
    started = time.monotonic()
    with _sides(ctx) as side, side.errors("copying"):
        source, target = side.engine(side.src), side.engine(side.tgt)
        md, tmd = side.metadata(source)
        totals = {t.name: count_rows(source, t) for t in md.sorted_tables}
        grand = sum(totals.values())
        rows: dict[str, int] = {}
        looked = {"at": time.monotonic(), "said": time.monotonic(), "stop": False}

        def on_batch(table: str, done: int) -> None:
            # The cancel flag and progress live in the store: look often, say less often.
            now = time.monotonic()
            if now - looked["at"] < CANCEL_EVERY:
                return
            looked["at"] = now
            looked["stop"] = ctx.cancel_requested()
            if now - looked["said"] >= PROGRESS_EVERY:
                looked["said"] = now
                so_far = sum(rows.values()) + done
                ctx.progress(f"copied {so_far:,} of {grand:,} rows (table {table})")

        method = _method(side, params)
        if method == "native":
            _native_tables(side, source, target, md, tmd, totals, rows, on_batch)
        for table in md.sorted_tables:
            name = table.name
            if method != "native":
                copy = copy_table_postgres if method == "postgres-copy" else copy_table
                rows[name] = copy(
                    source,
                    target,
                    table,
                    tmd.tables[name],
                    batch=params.batch_rows,
                    on_batch=lambda done, name=name: on_batch(name, done),  # type: ignore[misc]
                    stop=lambda: bool(looked["stop"]),
                )
            if looked["stop"]:
                raise PermanentError("cancelled on request; the partial copy is dropped")
        elapsed = time.monotonic() - started
        total = sum(rows.values())
        ctx.progress(f"copied {total:,} rows in {len(rows)} tables")
        return {
            "rows": total,
            "method": method,
            "seconds": round(elapsed, 3),
            "rows_per_second": round(total / elapsed) if elapsed > 0 else None,
        }


def _method(side: _Side, params: CopyDatabaseParams) -> str:
    """How the rows go over: ``native``, ``postgres-copy`` or ``stream``."""
    engine = side.src.engine_name
    if side.same_engine and params.method == "auto" and native_tools(engine):
        return "native"
    if side.same_engine and engine == "postgresql":
        return "postgres-copy"
    return "stream"


def _native_tables(
    side: _Side,
    source: Engine,
    target: Engine,
    md: MetaData,
    tmd: MetaData,
    totals: dict[str, int],
    rows: dict[str, int],
    on_batch: Callable[[str, int], None],
) -> None:
    """Every table through the native tools, ``NATIVE_PARALLEL`` at a time, largest first."""
    order = sorted(md.sorted_tables, key=lambda t: -totals[t.name])
    with ThreadPoolExecutor(NATIVE_PARALLEL) as pool:
        futures = {
            pool.submit(_native_table, side, source, target, t, tmd.tables[t.name]): t.name
            for t in order
        }
        for future in as_completed(futures):
            rows[futures[future]] = future.result()
            on_batch(futures[future], 0)


def _native_table(
    side: _Side, source: Engine, target: Engine, src_table: Table, tgt_table: Table
) -> int:
    """One table through the native tools: all of it, or (after a crash) all of it again."""
    total = count_rows(source, src_table)
    done = count_rows(target, tgt_table)
    if done == total:
        return done
    if done:
        with target.begin() as conn:
            conn.execute(tgt_table.delete())
    transfer.before_commit(src_table.name, 0)  # the fault-injection seam, looked up late
    native_table(side.src, side.tgt, src_table.name, [c.name for c in src_table.columns])
    return count_rows(target, tgt_table)


def _constraints(ctx: StepContext[CopyDatabaseParams]) -> dict[str, Any]:
    with _sides(ctx) as side, side.errors("adding indexes and keys copied from"):
        source, target = side.engine(side.src), side.engine(side.tgt)
        md, tmd = side.metadata(source)
        with target.begin() as conn:
            keys_added = add_primary_keys(conn, md)
            indexes = add_indexes(conn, md, tmd)
            keys = add_foreign_keys(conn, md, tmd)
            reset_sequences(conn, md.sorted_tables)
        return {"primary_keys": keys_added, "indexes": indexes, "foreign_keys": keys}


def _verify(ctx: StepContext[CopyDatabaseParams]) -> dict[str, Any]:
    with _sides(ctx) as side, side.errors("verifying the copy of"):
        portable = not side.same_engine
        ctx.progress("verifying row counts and checksums")
        source, target = side.engine(side.src), side.engine(side.tgt)
        tables = reflect(source).tables
        # Each side is one aggregate query per table run by its own server: both at once.
        with ThreadPoolExecutor(2) as pool:
            theirs = pool.submit(table_stats, target, tables, portable=portable)
            expected = table_stats(source, tables, portable=portable)
            actual = theirs.result()
        differ = [name for name in expected if expected[name] != actual.get(name)]
        if differ:
            shown = ", ".join(
                f"{n} ({expected[n].rows} rows in the source, {actual[n].rows} in the copy)"
                if expected[n].rows != actual[n].rows
                else f"{n} (checksum)"
                for n in differ
            )
            raise CopyMismatch(f"the copy differs from the source in {shown}", tables=differ)
        return {
            "checksums": "portable" if portable else "engine",
            "tables": {name: stats.to_dict() for name, stats in expected.items()},
        }


def _result(outputs: dict[str, Any]) -> dict[str, Any]:
    tables = outputs["verify"]["tables"]
    return {
        "source": outputs["prepare"]["source"],
        "target": outputs["prepare"]["target"],
        "verified": True,
        "rows": sum(t["rows"] for t in tables.values()),
        "method": outputs["data"]["method"],
        "seconds": outputs["data"]["seconds"],
        "rows_per_second": outputs["data"]["rows_per_second"],
        "checksums": outputs["verify"]["checksums"],
        "tables": tables,
        "primary_keys": len(outputs["constraints"]["primary_keys"]),
        "indexes": len(outputs["constraints"]["indexes"]),
        "foreign_keys": len(outputs["constraints"]["foreign_keys"]),
    }


@job_kind("copy_database", queue="jobs", params=CopyDatabaseParams, result=_result)
def copy_database(params: CopyDatabaseParams) -> Flow:
    """Copy a database to another server (same or other engine), then verify it equal."""
    return Flow.of(
        Step("prepare", _prepare, revert=_drop_created, retry=_RETRY),
        Step("schema", _schema, retry=_RETRY),
        Step("data", _data, retry=_RETRY),
        Step("constraints", _constraints, retry=_RETRY),
        Step("verify", _verify, retry=_RETRY),
    )
