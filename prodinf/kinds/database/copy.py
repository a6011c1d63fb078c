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
    ``prodinf.databases.transfer``). ``PARALLEL`` tables at a time, each given its
    keys and indexes and measured on the target as soon as its rows are in
    (``prodinf.databases.pipeline``). PostgreSQL's native loads read one exported
    snapshot of the source, from which the source's checksums are taken meanwhile
    (``prodinf.databases.snapshot``). Progress is shown in rows; a cancel stops it
    and reverts the copy.
``constraints``
    Adds the foreign keys, and moves PostgreSQL sequences past the copied ids.
``verify``
    Compares row counts and per-table checksums of the source (from the data
    step's snapshot, or else taken now) with the copy's, taken by the data step
    (``prodinf.databases.checksum``; the portable form across engines). A
    difference fails the job, naming the tables, and reverts the copy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy import Engine, MetaData, NullPool, inspect

from prodinf import Flow, Retry, Step, StepContext, job_kind
from prodinf.config import Settings
from prodinf.databases.checksum import Hashes, TableStats, table_stats, typed_hashes
from prodinf.databases.loads import copy_method, loader
from prodinf.databases.pipeline import Pipeline
from prodinf.databases.schema import (
    add_foreign_keys,
    add_indexes,
    add_primary_keys,
    plan_indexes,
    reflect,
    reset_sequences,
    target_metadata,
)
from prodinf.databases.snapshot import held_snapshot
from prodinf.databases.transfer import count_rows, estimated_rows, table_sizes
from prodinf.databases.uri import DatabaseURI, DatabaseUriField, database_errors
from prodinf.exceptions import PermanentError

__all__ = ["CopyDatabaseParams", "CopyMismatch"]

#: Seconds between progress messages during the data step.
PROGRESS_EVERY = 2.0
#: Seconds between looks at a cancel request during the data step (one small read each):
#: a stop lands within this, not when the copy ends.
CANCEL_EVERY = 0.5

#: PostgreSQL settings for a copy's sessions: no parallel workers for a query or an
#: index build, as the copy already keeps the server's cores busy with its tables.
NO_PARALLEL_WORKERS = "-c max_parallel_workers_per_gather=0 -c max_parallel_maintenance_workers=0"

#: Tables copied at once (a SQLite target takes one), and tables each server measures
#: at once in the verify step.
PARALLEL = 2

#: Jobs whose source schema this process keeps: reflecting a database takes a query per
#: kind of object and its Python work (0.2-0.6 s for ten tables), and the schema, data
#: and constraints steps each need it. The later steps use what the schema step read,
#: so they also agree with the tables it created; the schema step, and a step run in
#: another process (after a crash), read it again. Never changed once read (the
#: target's tables are built apart, by ``target_metadata``).
REFLECTED_JOBS = 8
_REFLECTED: dict[tuple[str, str], MetaData] = {}
_REFLECTED_LOCK = threading.Lock()

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

    def __init__(self, params: CopyDatabaseParams, settings: Settings, job_id: str) -> None:
        self.job_id = job_id
        # checked at submission, and again here: the files may have changed since
        self.src = DatabaseURI.parse(params.src_uri, field="src_uri").allowed(settings, "src_uri")
        self.tgt = DatabaseURI.parse(params.tgt_uri, field="tgt_uri").allowed(settings, "tgt_uri")
        self.same_engine = self.src.engine_name == self.tgt.engine_name
        self._engines: list[Engine] = []

    def engine(self, uri: DatabaseURI) -> Engine:
        # A step's connections are reused within it (each new one costs the server a
        # process start and its caches filled again) and all closed when it ends.
        pooled: dict[str, Any] = {"pool_size": PARALLEL + 2, "max_overflow": 2 * PARALLEL}
        if uri.engine_name == "postgresql":  # after the URI's own options, if any
            given = str(uri.url.query.get("options") or "")
            pooled["connect_args"] = {"options": f"{given} {NO_PARALLEL_WORKERS}".strip()}
        engine = uri.create_engine(
            **({"poolclass": NullPool} if uri.engine_name == "sqlite" else pooled)
        )
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

    def metadata(self, source: Engine, *, fresh: bool = False) -> tuple[MetaData, MetaData]:
        """The source's schema and the target's: as the schema step last read it in this
        process, or (``fresh``, or none kept) read now."""
        key = (self.job_id, self.src.secret())
        with _REFLECTED_LOCK:
            md = _REFLECTED.pop(key, None)
        if fresh:
            md = None
        if md is None:
            md = reflect(source)
        with _REFLECTED_LOCK:
            _REFLECTED[key] = md  # the newest last
            while len(_REFLECTED) > REFLECTED_JOBS:
                del _REFLECTED[next(iter(_REFLECTED))]
        return md, target_metadata(md, self.tgt.engine_name, self.same_engine)


@contextmanager
def _sides(ctx: StepContext[CopyDatabaseParams]) -> Iterator[_Side]:
    side = _Side(ctx.params, ctx.settings, ctx.job_id)
    try:
        yield side
    finally:
        side.close()


def _prepare(ctx: StepContext[CopyDatabaseParams]) -> dict[str, Any]:
    params = ctx.params
    with _sides(ctx) as side, ExitStack() as held:
        src, tgt = side.src, side.tgt
        # One connection to each server for the checks and CREATE DATABASE (one in all
        # when both databases are on one server): each costs the server a process.
        admin = held.enter_context(src.admin())
        tgt_admin = admin if src.same_server(tgt) else held.enter_context(tgt.admin())
        if not src.exists(admin):
            raise PermanentError(f"the source {src.masked()} does not exist", field="src_uri")
        source = side.engine(src)
        with side.errors("reading the tables of"), source.connect() as conn:
            tables = inspect(conn).get_table_names()
        if not tables:
            raise PermanentError(f"the source {src.masked()} has no tables", field="src_uri")
        # The schema step's reading of the source (``metadata`` keeps it), done while
        # the target is made: CREATE DATABASE waits for the disk, reflection for the CPU.
        pool = held.enter_context(ThreadPoolExecutor(max_workers=1))
        reflected = pool.submit(side.metadata, source, fresh=True)

        def decide() -> dict[str, bool]:
            existed = tgt.exists(tgt_admin)
            present = tgt.table_names(exists=existed) if existed else []
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
        tgt.create(tgt_admin)
        with side.errors("reading the schema of"):
            reflected.result()
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
        md, tmd = side.metadata(source)  # as prepare read it a moment ago, if in this process
        with target.begin() as conn:
            # The tables not there yet (all of them, unless this step runs again): one
            # look at the target, not one per table.
            there = set(inspect(conn).get_table_names())
            missing = [t for t in tmd.sorted_tables if t.name not in there]
            tmd.create_all(conn, tables=missing, checkfirst=False)
        return {"tables": [t.name for t in md.sorted_tables]}


def _data(ctx: StepContext[CopyDatabaseParams]) -> dict[str, Any]:
    params = ctx.params
    started = time.monotonic()
    with _sides(ctx) as side, side.errors("copying"), ExitStack() as held:
        source, target = side.engine(side.src), side.engine(side.tgt)
        md, tmd = side.metadata(source)
        method = copy_method(side.src, side.tgt, params.method)
        with target.connect() as conn:
            indexes = plan_indexes(conn, md, tmd)
        # Largest first, so the last table to finish is a small one.
        sizes = table_sizes(source)
        order = sorted((t.name for t in md.sorted_tables), key=lambda n: -sizes.get(n, 0))
        # The native PostgreSQL loads read one snapshot of the source, held for the step.
        snapshot = held.enter_context(held_snapshot(source)) if method == "native" else None
        # Values hashed by their types when both servers hash alike (the verify step
        # then measures what is left the same way).
        hashes: Hashes = "columns" if side.same_engine and typed_hashes(source, target) else "text"
        pipeline = Pipeline(
            source,
            target,
            md,
            tmd,
            load=loader(
                side.src, side.tgt, source, target, method, params.batch_rows, snapshot, sizes
            ),
            indexes=indexes,
            order=order,
            workers=1 if side.tgt.engine_name == "sqlite" else PARALLEL,
            portable=not side.same_engine,
            hashes=hashes,
        )
        totals: dict[str, int] = {}
        said = {"at": time.monotonic()}

        def poll() -> None:
            # The cancel flag and progress live in the store: look often, say less often.
            if ctx.cancel_requested():
                pipeline.stop.set()
                return
            now = time.monotonic()
            if now - said["at"] >= PROGRESS_EVERY:
                said["at"] = now
                if not totals:  # once the copy is long enough to show progress
                    totals.update(_row_totals(source, md))
                so_far = sum(pipeline.rows.values())
                busy = ", ".join(n for n in order if n in pipeline.rows and n not in pipeline.done)
                total = max(so_far, sum(totals.values()))
                ctx.progress(f"copied {so_far:,} of about {total:,} rows (tables {busy or '-'})")

        def measure_source(snapshot: str) -> tuple[dict[str, TableStats], float]:
            began = time.monotonic()
            stats = table_stats(
                source, order, snapshot=snapshot, stop=pipeline.stop.is_set, hashes=hashes
            )
            return stats, time.monotonic() - began

        with ThreadPoolExecutor(1, thread_name_prefix="copy-source") as pool:
            # The source's checksums, from the snapshot the loads read, while they run.
            measured = pool.submit(measure_source, snapshot) if snapshot else None
            done = pipeline.run(poll, CANCEL_EVERY)
            sources, source_seconds = measured.result() if measured else ({}, 0.0)
        if pipeline.stop.is_set():
            raise PermanentError("cancelled on request; the partial copy is dropped")
        elapsed = time.monotonic() - started
        total = sum(c.stats.rows for c in done.values() if c.stats)
        ctx.progress(f"copied {total:,} rows in {len(done)} tables")
        phases = ("load", "keys", "checksum")
        return {
            "rows": total,
            "method": method,
            "seconds": round(elapsed, 3),
            "rows_per_second": round(total / elapsed) if elapsed > 0 else None,
            "hashes": hashes,
            "tables": {n: c.stats.to_dict() for n, c in sorted(done.items()) if c.stats},
            # The source's, when read in the loads' snapshot: the verify step takes the rest.
            "source_tables": {n: stats.to_dict() for n, stats in sources.items()},
            "primary_keys": [n for n in order if done[n].primary_key],
            "indexes": [i for n in order for i in done[n].indexes],
            # Seconds of each phase summed over the tables (they overlap in time).
            "phases": {
                **{p: round(sum(c.seconds.get(p, 0) for c in done.values()), 3) for p in phases},
                "source checksum": round(source_seconds, 3),
            },
        }


def _row_totals(source: Engine, md: MetaData) -> dict[str, int]:
    """Each source table's rows for the progress messages: the catalog's estimate where
    the server keeps one (free), else counted. A ``count(*)`` of every table mid-copy
    would read the whole source once more while the loads and its checksums need the
    same cores (a tenth of a second of a 1M-row copy's 2.7 here)."""
    estimates = estimated_rows(source)
    return {
        t.name: estimates[t.name] if t.name in estimates else count_rows(source, t)
        for t in md.sorted_tables
    }


def _constraints(ctx: StepContext[CopyDatabaseParams]) -> dict[str, Any]:
    data = ctx.outputs.get("data") or {}
    with _sides(ctx) as side, side.errors("adding indexes and keys copied from"):
        source, target = side.engine(side.src), side.engine(side.tgt)
        md, tmd = side.metadata(source)
        with target.begin() as conn:
            # The data step built each table's keys and indexes once its rows were in
            # (a job begun by an older prodinf left them to this step).
            keyed = list(data.get("primary_keys", []))
            keys_added = keyed + add_primary_keys(conn, md, have=keyed)
            indexes = list(data.get("indexes", []))
            if "indexes" not in data:
                indexes += add_indexes(conn, md, tmd)
            keys = add_foreign_keys(conn, md, tmd)
            reset_sequences(conn, md.sorted_tables)
        return {"primary_keys": keys_added, "indexes": indexes, "foreign_keys": keys}


def _verify(ctx: StepContext[CopyDatabaseParams]) -> dict[str, Any]:
    data = ctx.outputs.get("data") or {}
    copied = {name: TableStats(**stats) for name, stats in (data.get("tables") or {}).items()}
    read = {name: TableStats(**s) for name, s in (data.get("source_tables") or {}).items()}
    # Measured the way the data step measured (text: also a job begun by a prodinf
    # older than typed hashes; typed: one older than hashes by column).
    hashes: Hashes = "text"
    if data.get("hashes") in ("columns", "typed"):
        hashes = data["hashes"]
    with _sides(ctx) as side, side.errors("verifying the copy of"):
        portable = not side.same_engine
        ctx.progress("verifying row counts and checksums")
        source, target = side.engine(side.src), side.engine(side.tgt)
        tables = side.src.table_names()
        # Largest first, each server measuring PARALLEL tables at a time. The copy's own
        # checksums were taken by the data step as each table was done. The source's
        # too when its loads read one snapshot (the checksums are of what was copied);
        # otherwise they are taken now, so a change made to it during the copy is seen.
        tables.sort(key=lambda n: -(copied[n].rows if n in copied else 0))
        rest = [n for n in tables if n not in read]
        with ThreadPoolExecutor(1) as pool:
            theirs = (
                None
                if set(tables) <= set(copied)
                else pool.submit(
                    table_stats, target, tables, portable=portable, workers=PARALLEL, hashes=hashes
                )
            )
            now = (
                table_stats(source, rest, portable=portable, workers=PARALLEL, hashes=hashes)
                if rest
                else {}
            )
            expected = {n: read[n] if n in read else now[n] for n in sorted(tables)}
            actual = copied if theirs is None else theirs.result()
        differ = [name for name in expected if expected[name] != actual.get(name)]
        if differ:
            shown = ", ".join(
                f"{n} (not in the copy)"
                if n not in actual
                else f"{n} ({expected[n].rows} rows in the source, {actual[n].rows} in the copy)"
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
