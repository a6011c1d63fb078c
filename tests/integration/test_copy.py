"""``copy_database`` on real SQLite, PostgreSQL and MariaDB core-like databases (~114,000 rows).

Given a generated core-like database; when the copy_database kind copies it (driven
in this process by the job runner on an embedded store, or by real worker
processes); then the copy holds exactly the source's rows, checked here row by row
independently of the kind's own verification, on every pair of engines; a copy
killed mid-way by SIGKILL and resumed by another worker ends equal; a PostgreSQL
copy is of one moment of its source, verified against it; an existing
target is refused unless ``overwrite``; a copy that fails or is cancelled drops what
it created; unreachable servers and bad credentials fail clearly.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, NullPool, func, select, text

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.databases import transfer
from prodinf.databases.uri import DatabaseURI
from prodinf.kinds.database import copy as copy_kind
from prodinf.runtime import Runtime
from tests.conftest import Processes
from tests.integration.core_faults import execute
from tests.integration.datasets import Datasets
from tests.sample_data import build_core_like
from tests.waiting import wait_for_job, wait_until

pytestmark = pytest.mark.integration


def run(rt: Runtime, timeout: float = 180, **params: Any) -> dict[str, Any]:
    summary, _ = rt.jobs.submit("copy_database", params)
    return wait_for_job(rt, summary["id"], timeout, drive=True, interval=0.3)


# -- comparing two databases, independently of the kind's checksums ---------------------


def _normal(value: Any) -> Any:
    """A value as every engine agrees on it (booleans as 0/1, numbers to 9 places).

    MariaDB's DOUBLE reads back as a Decimal through SQLAlchemy, elsewhere as a float.
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float | Decimal):
        return round(float(value), 9)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    return value


def contents(uri: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows in primary-key order, columns by name, values normalised."""
    engine = DatabaseURI.parse(uri).create_engine(poolclass=NullPool)
    md = MetaData()
    try:
        md.reflect(engine)
        out: dict[str, list[tuple[Any, ...]]] = {}
        with engine.connect() as conn:
            for table in md.sorted_tables:
                cols = sorted(table.columns, key=lambda c: c.name)
                key = list(table.primary_key.columns) or cols
                rows = conn.execute(select(*cols).order_by(*key)).all()
                out[table.name] = [tuple(_normal(v) for v in row) for row in rows]
        return out
    finally:
        engine.dispose()


def assert_same(src: str, tgt: str, counts: dict[str, int]) -> None:
    source, copy = contents(src), contents(tgt)
    assert sorted(copy) == sorted(source)
    assert {name: len(rows) for name, rows in copy.items()} == counts
    for name in source:
        assert copy[name] == source[name], f"table {name} differs"


def foreign_keys(uri: str) -> int:
    engine = DatabaseURI.parse(uri).create_engine(poolclass=NullPool)
    try:
        md = MetaData()
        md.reflect(engine)
        return sum(len(t.foreign_key_constraints) for t in md.tables.values())
    finally:
        engine.dispose()


def primary_keys(uri: str) -> dict[str, str | None]:
    """Each table's primary key constraint: its name, by table."""
    engine = DatabaseURI.parse(uri).create_engine(poolclass=NullPool)
    try:
        md = MetaData()
        md.reflect(engine)
        return {t.name: t.primary_key.name for t in md.tables.values()}
    finally:
        engine.dispose()


# -- a good copy, on every pair of engines ----------------------------------------------

TARGETS = ["sqlite", "postgresql", "mysql", "mysql-stream"]


@pytest.mark.parametrize("target", TARGETS)
def test_a_copy_holds_exactly_the_source_rows(
    rt: Runtime, core_db: tuple[str, dict[str, int]], datasets: Datasets, target: str
) -> None:
    # Given a core-like database of ~114,000 rows and a target on each engine
    src, counts = core_db
    engine_name, _, method = target.partition("-")
    tgt = datasets.uri(engine_name)

    # When copy_database copies it
    done = run(rt, src_uri=src, tgt_uri=tgt, method=method or "auto")

    # Then the copy is verified and holds exactly the source's rows and foreign keys
    assert done["status"] == "succeeded", done.get("error")
    result = done["result"]
    assert result["verified"] is True
    assert result["rows"] == sum(counts.values()) >= 100_000
    same_engine = DatabaseURI.parse(src).engine_name == engine_name
    assert result["checksums"] == ("engine" if same_engine else "portable")
    # PostgreSQL to the same server hashes values by type (one version on both sides)
    data = next(s["output"] for s in done["steps"] if s["name"] == "data")
    both_postgres = same_engine and engine_name == "postgresql"
    assert data["hashes"] == ("columns" if both_postgres else "text")
    if both_postgres:  # each key built as an index first, then named as the source's
        assert primary_keys(tgt) == primary_keys(src)
        assert all(name.endswith("_pkey") for name in primary_keys(src).values())
    assert_same(src, tgt, counts)
    assert foreign_keys(tgt) == foreign_keys(src) == 12
    # The copy is usable: its meta table still numbers new rows after the copied ones.
    execute(tgt, "INSERT INTO meta (species_id, meta_key, meta_value) VALUES (1, 'k', 'v')")
    engine = DatabaseURI.parse(tgt).create_engine(poolclass=NullPool)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT meta_id FROM meta WHERE meta_key = 'k'")) == 9
    engine.dispose()
    if method == "stream":
        assert result["method"] == "stream"


# -- an existing target ---------------------------------------------------------------


@pytest.mark.parametrize("engine_name", ["mysql", "postgresql", "sqlite"])
def test_an_existing_target_is_refused_unless_overwrite(
    rt: Runtime, datasets: Datasets, engine_name: str
) -> None:
    # Given a source and a target that already holds another dataset
    src, counts = datasets.build(engine_name, genes=200, seed=1)
    tgt, before = datasets.build(engine_name, genes=100, seed=2)

    # When the copy is asked for without overwrite
    refused = run(rt, src_uri=src, tgt_uri=tgt)

    # Then it fails saying so, naming the target, which it leaves untouched
    assert refused["status"] == "failed"
    message = refused["error"]["message"]
    assert "already exists" in message and "overwrite" in message
    assert DatabaseURI.parse(tgt).masked() in message
    assert {n: len(r) for n, r in contents(tgt).items()} == before  # untouched

    # When it is asked for with overwrite
    replaced = run(rt, src_uri=src, tgt_uri=tgt, overwrite=True)

    # Then the target is replaced by an exact copy
    assert replaced["status"] == "succeeded", replaced.get("error")
    assert_same(src, tgt, counts)


# -- failing and cancelling drop what the copy created -------------------------------


@pytest.mark.parametrize("core_db", ["mysql"], indirect=True)
def test_a_copy_that_fails_verification_is_dropped_and_names_the_table(
    rt: Runtime,
    core_db: tuple[str, dict[str, int]],
    datasets: Datasets,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a MariaDB source and a PostgreSQL target the copy will create
    src, _ = core_db
    tgt = datasets.uri("postgresql")
    # A real change to the source while the copy runs (a row added to meta after
    # the data step); the hook only picks the moment.
    constraints = copy_kind._constraints

    def change_source_then_constraints(ctx: Any) -> Any:
        execute(src, "INSERT INTO meta (species_id, meta_key, meta_value) VALUES (1, 'x', 'y')")
        return constraints(ctx)

    monkeypatch.setattr(copy_kind, "_constraints", change_source_then_constraints)
    # When the copy runs and the source changes under it
    try:
        done = run(rt, src_uri=src, tgt_uri=tgt)
    finally:
        execute(src, "DELETE FROM meta WHERE meta_key = 'x'")

    # Then verification fails naming the table that differs, and the revert
    # has dropped the database the job created
    assert done["status"] == "reverted"
    assert "meta (9 rows in the source, 8 in the copy)" in done["error"]["message"]
    assert not DatabaseURI.parse(tgt).exists()  # the job created it: the revert dropped it


@pytest.mark.parametrize("core_db", ["postgresql"], indirect=True)
def test_a_postgresql_copy_is_of_one_moment_of_its_source(
    rt: Runtime,
    core_db: tuple[str, dict[str, int]],
    datasets: Datasets,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a PostgreSQL source that changes once the data step has taken its snapshot
    src, counts = core_db
    tgt = datasets.uri("postgresql")
    held = copy_kind.held_snapshot

    changed: list[bool] = []

    @contextmanager
    def snapshot_then_change(engine: Any) -> Iterator[str | None]:
        with held(engine) as snapshot:
            if not changed:
                # An id of its own: the sample's ids were given, its sequence is still at 1.
                insert = "INSERT INTO meta (meta_id, species_id, meta_key, meta_value) VALUES "
                execute(src, insert + "(1000, 1, 'x', 'y')")
                changed.append(True)
            yield snapshot

    monkeypatch.setattr(copy_kind, "held_snapshot", snapshot_then_change)
    # When the native tools copy it
    try:
        done = run(rt, src_uri=src, tgt_uri=tgt)
        # Then every table was read as the snapshot saw it, and verified against it:
        # the copy holds the source's rows from before the change, not half of it
        assert done["status"] == "succeeded", [h for h in done["history"] if "error" in str(h)]
        assert done["result"]["method"] == "native"
        data = next(s["output"] for s in done["steps"] if s["name"] == "data")
        assert sorted(data["source_tables"]) == sorted(counts)
        assert done["result"]["tables"]["meta"]["rows"] == counts["meta"]
    finally:
        execute(src, "DELETE FROM meta WHERE meta_key = 'x'")
    assert_same(src, tgt, counts)


@pytest.mark.parametrize("core_db", ["postgresql"], indirect=True)
def test_a_cancelled_copy_drops_its_tables_but_not_a_database_it_did_not_create(
    rt: Runtime,
    core_db: tuple[str, dict[str, int]],
    datasets: Datasets,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an empty target database that exists: the copy may use it, but must not drop it
    src, _ = core_db
    tgt = DatabaseURI.parse(datasets.uri("postgresql"))
    tgt.create()
    monkeypatch.setattr(copy_kind, "PROGRESS_EVERY", 0.0)  # look at the cancel flag often
    # and a copy that holds still as it reaches the exon table, until the cancel has been
    # asked for (the hook only picks the moment: the cancel is real). Whatever the method,
    # the tables before exon are on the target by then, and exon and more are not.
    held, asked, over = threading.Event(), threading.Event(), threading.Event()

    def hold_until_cancelled(table: str, batch: int) -> None:
        if table == "exon" and not held.is_set():
            held.set()
            assert asked.wait(60), "nobody cancelled the held copy within 60 s"

    monkeypatch.setattr(transfer, "before_commit", hold_until_cancelled)
    summary, _ = rt.jobs.submit(
        "copy_database", {"src_uri": src, "tgt_uri": tgt.secret(), "batch_rows": 500}
    )
    job_id = summary["id"]

    # When someone cancels it from another thread while it is held mid-copy
    def cancel_mid_copy() -> None:
        while not held.wait(0.1):
            if over.is_set():
                return
        rt.jobs.cancel(job_id)
        asked.set()

    canceller = threading.Thread(target=cancel_mid_copy, daemon=True)
    canceller.start()
    try:
        done = wait_for_job(rt, job_id, 180, drive=True, interval=0.3)
    finally:
        over.set()
        canceller.join(30)
    assert not canceller.is_alive(), "the cancelling thread did not end"
    assert held.is_set(), "the copy never reached the exon table"
    assert asked.is_set(), "the cancel was not asked for"

    # Then the cancel landed mid-copy: asked for while the data step ran, which it ended
    events = [(entry["event"], entry["step"]) for entry in done["history"]]
    data_started = events.index(("step.started", "data"))
    requested = events.index(("job.cancel_requested", None))
    data_ended = next(
        i
        for i, (event, step) in enumerate(events)
        if step == "data" and i > data_started and event != "step.started"
    )
    assert data_started < requested < data_ended, events
    # and the job is reverted: the tables it made are dropped, the database it found stays
    assert done["status"] == "reverted", done.get("error")
    assert "cancelled" in done["error"]["message"]
    assert tgt.exists() and tgt.table_names() == []


# -- servers that fail ----------------------------------------------------------------


def test_an_unreachable_source_fails_after_retries_and_says_which(
    rt: Runtime, datasets: Datasets
) -> None:
    # Given a source on a port nothing listens on, with a password in its URI
    tgt = datasets.uri("sqlite")
    # When it is copied
    done = run(rt, src_uri="mysql://someone:Pw-9@127.0.0.1:1/nowhere", tgt_uri=tgt)

    # Then it fails after 3 attempts naming the server, never the password, and
    # creates no target
    assert done["status"] == "failed"
    assert done["steps"][0]["attempts"] == 3
    message = done["error"]["message"]
    assert "127.0.0.1:1/nowhere" in message and "server unavailable" in message
    assert "Pw-9" not in str(done)
    assert not DatabaseURI.parse(tgt).exists()


def test_bad_credentials_fail_at_once(rt: Runtime, datasets: Datasets) -> None:
    # Given a target on MariaDB reached with credentials it refuses
    src, _ = datasets.build("sqlite", genes=50)
    server = DatabaseURI.parse(datasets.uri("mysql")).url
    tgt = server.set(username="nobody_a", password="Wrong-77").render_as_string(False)

    # When the copy runs
    done = run(rt, src_uri=src, tgt_uri=tgt)

    # Then it fails at the first attempt (those never work), without the password
    assert done["status"] == "failed"
    assert done["steps"][0]["attempts"] == 1
    assert "access denied" in done["error"]["message"]
    assert "Wrong-77" not in str(done)


# -- a worker killed mid-copy --------------------------------------------------------

# (source, target[-method], batch to stall before, exon_transcript rows then committed)
KILLS = [
    ("mysql", "postgresql", 5, 4 * 2000),  # streamed into COPY
    ("postgresql", "postgresql-stream", 5, 4 * 2000),  # COPY piped through prodinf
    ("mysql", "mysql-stream", 5, 4 * 2000),  # streamed into multi-row INSERTs
    ("mysql", "mysql", 0, 0),  # mysqldump | mysql, one table per transaction
]


@pytest.mark.parametrize(
    ("source", "target", "batch", "held"), KILLS, ids=[f"{k[0]}-{k[1]}" for k in KILLS]
)
def test_a_copy_killed_mid_way_resumes_on_another_worker_and_ends_equal(
    servers: Settings,
    processes: Processes,
    datasets: Datasets,
    tmp_path: Path,
    source: str,
    target: str,
    batch: int,
    held: int,
) -> None:
    # Given a worker that will stall mid-copy of exon_transcript (the fault plugin
    # picks the moment)
    src, counts = datasets.build(source)
    engine_name, _, method = target.partition("-")
    tgt = datasets.uri(engine_name)
    marker = tmp_path / "paused"
    # exon_transcript has a composite key. The worker stalls with a batch of 2,000
    # written but not committed (batch 0: before the native tools load the table).
    env = {
        "PRODINF_PLUGINS": "tests.integration.copy_faults",
        "PRODINF_TEST_PAUSE_COPY": f"exon_transcript:{batch}:{marker}",
    }
    doomed = processes.worker(
        servers, queues=servers.queue_jobs, concurrency=1, name="doomed", extra_env=env
    )
    rt = Runtime(servers, create_celery(servers))
    try:
        summary, _ = rt.jobs.submit(
            "copy_database",
            {"src_uri": src, "tgt_uri": tgt, "batch_rows": 2000, "method": method or "auto"},
        )
        # When it is SIGKILLed there, as a power cut would
        wait_until(marker.exists, 120, "the copy to pause", logs=processes.logs)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
        engine = DatabaseURI.parse(tgt).create_engine(poolclass=NullPool)
        with engine.connect() as conn:
            there = conn.scalar(select(func.count()).select_from(text("exon_transcript")))
        engine.dispose()
        assert there == held  # the committed batches; the one being written died with the worker

        # and another worker starts
        processes.worker(servers, queues=servers.queue_jobs, concurrency=1, name="rescuer")
        done = wait_for_job(rt, summary["id"], 240, logs=processes.logs)
    finally:
        rt.close()

    # Then the copy ends equal to the source
    assert done["status"] == "succeeded", done.get("error")
    # The second worker took the data step over, and went on from where it stopped.
    assert ("step.resumed", "data") in [(h["event"], h["step"]) for h in done["history"]]
    assert_same(src, tgt, counts)


def test_the_sample_dataset_is_deterministic(datasets: Datasets) -> None:
    # Given two databases built from the same seed
    a, counts = datasets.build("sqlite", genes=300, seed=7)
    b = datasets.uri("sqlite")
    # Then they hold the same rows
    assert build_core_like(b, genes=300, seed=7) == counts
    assert contents(a) == contents(b)


def test_a_streamed_mariadb_load_leaves_its_pooled_connection_checking(
    datasets: Datasets,
) -> None:
    # Given a MariaDB target whose engine pools one connection (as a copy step's does)
    uri = DatabaseURI.parse(datasets.uri("mysql"))
    uri.create()
    engine = uri.create_engine(pool_size=1, max_overflow=0)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(10))"))
        table = MetaData()
        table.reflect(engine)
        # When the streamed writer loads a batch (its session skips key checks) and ends
        writer = transfer.writer_for(engine, table.tables["t"])
        writer.write([(1, "a"), (2, "b")])
        writer.commit()
        writer.close()
        # Then the same pooled connection checks keys again for what runs on it next
        with engine.connect() as conn:
            checks = conn.execute(text("SELECT @@foreign_key_checks, @@unique_checks")).one()
            assert tuple(checks) == (1, 1)
            assert conn.scalar(select(func.count()).select_from(table.tables["t"])) == 2
    finally:
        engine.dispose()


def test_a_copys_postgresql_sessions_keep_the_uris_own_options(
    datasets: Datasets, tmp_path: Path
) -> None:
    # Given a PostgreSQL URI that sets a session option of its own
    uri = DatabaseURI.parse(datasets.uri("postgresql"))
    uri.create()
    given = uri.url.update_query_dict({"options": "-c statement_timeout=12345"})
    target = tmp_path / "home" / "data" / "t.sqlite"
    params = copy_kind.CopyDatabaseParams(
        src_uri=DatabaseURI(given).secret(), tgt_uri=f"sqlite:///{target}"
    )
    side = copy_kind._Side(params, Settings(home=tmp_path / "home"), "job")
    try:
        # When the copy opens its sessions on it
        with side.engine(side.src).connect() as conn:
            shown = [conn.exec_driver_sql(f"SHOW {name}").scalar_one() for name in SHOWN]
        # Then the URI's option holds, beside the copy's own: no parallel workers (the
        # copy keeps the cores busy with its tables already)
        assert shown == ["12345ms", "0", "0"]
    finally:
        side.close()


SHOWN = ("statement_timeout", "max_parallel_workers_per_gather", "max_parallel_maintenance_workers")


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql", "sqlite"])
def test_a_copys_progress_takes_the_row_totals_from_the_catalog_where_it_can(
    datasets: Datasets, engine_name: str
) -> None:
    # Given a source with a table its server has analyzed (with rows added since) and a
    # table it has not
    uri = DatabaseURI.parse(datasets.uri(engine_name))
    uri.create()

    def rows(first: int, last: int) -> str:
        return ", ".join(f"({i})" for i in range(first, last))

    execute(
        uri.secret(),
        "CREATE TABLE seen (id INTEGER PRIMARY KEY)",
        "CREATE TABLE fresh (id INTEGER PRIMARY KEY)",
        f"INSERT INTO seen VALUES {rows(0, 500)}",
        f"INSERT INTO fresh VALUES {rows(0, 300)}",
    )
    if engine_name != "sqlite":
        execute(uri.secret(), "ANALYZE TABLE seen" if engine_name == "mysql" else "ANALYZE seen")
    execute(uri.secret(), f"INSERT INTO seen VALUES {rows(500, 540)}")
    engine = uri.create_engine(poolclass=NullPool)
    try:
        md = MetaData()
        md.reflect(engine)
        # When the data step takes the totals its progress messages show ("of about N")
        totals = copy_kind._row_totals(engine, md)
    finally:
        engine.dispose()
    # Then PostgreSQL's are the estimate of the last ANALYZE (the table is not read
    # again mid-copy), and counted where there is none; MariaDB's are InnoDB's
    # estimates; SQLite keeps none, so its tables are counted
    if engine_name == "postgresql":
        assert totals == {"seen": 500, "fresh": 300}
    elif engine_name == "mysql":
        assert set(totals) == {"seen", "fresh"}
        assert 270 <= totals["seen"] <= 810 and 150 <= totals["fresh"] <= 450, totals
    else:
        assert totals == {"seen": 540, "fresh": 300}
