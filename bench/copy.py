"""Throughput of ``copy_database`` against the native dump-and-load pipes, in one run.

    python bench/copy.py [--genes 45000] [--rounds 3] [--keep]

For PostgreSQL, then MariaDB, it builds a core-like database of about 1,000,000
rows (``tests.sample_data``), then, in each of ``--rounds`` rounds, copies it twice: with the
``copy_database`` kind, driven in-process by prodinf's engine (store, steps,
history, verification and all) in a child process so its peak RSS is its own; and
with ``CREATE DATABASE`` then ``pg_dump | psql`` or ``mysqldump | mysql`` into it.
Throughput is rows per second of wall time for the whole copy, each from no target
database (prodinf's includes creating it, in its ``prepare`` step, and its
row-count and checksum verification, which the native pipe does not do; prodinf's
time runs from the job's submission to its end, as a running worker spends it, and
the child process's start, with what a worker does as it starts (imports, the
database drivers' too), is shown apart; the native line shows its CREATE
DATABASE and its pipe apart). A line per engine says where
prodinf's time goes: each step's seconds (``prepare`` creates the database,
``schema`` the tables, ``data`` loads each table then builds its keys and indexes
and takes its checksum on the target, ``constraints`` adds the foreign keys,
``verify`` takes the source's checksums, unless the data step took them already:
PostgreSQL's native copy takes them from the snapshot its loads read, alongside),
the time between steps (the store's transitions), and the data step's load, keys
and checksum seconds summed over its tables (they overlap, two tables at a time),
with its source checksum seconds. It also
times the whole healthcheck catalogue (the ``healthcheck`` kind, in-process) on
each source database.

Each copy starts from the same state of the server (``settle``: the source vacuumed
and analyzed, as autovacuum leaves a database in use, and a checkpoint), and the
figures shown are those of the round with the median ratio (one run of either copy
varies by a tenth on this 2-core machine); every round's ratio is shown.
The line ``postgresql: ... ratio=<prodinf/native>`` comes before the MariaDB one,
and the last line is ``ratio=<prodinf/native for MariaDB>``.
"""

from __future__ import annotations

# isort: off
import benchpath  # first: it keeps this folder from shadowing the standard library
# isort: on

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from prodinf.config import Settings
from prodinf.databases.uri import DatabaseURI
from tests.sample_data import build_core_like

ROOT = benchpath.ROOT

SERVERS = {
    "postgresql": os.environ.get(
        "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql"),
}


def drive(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Submit one job to a fresh embedded store and run it here, to the end: in a
    process set up as a worker's is when it starts (its drivers imported)."""
    import prodinf.kinds  # noqa: F401  (registers the kinds)
    from prodinf.databases.uri import load_drivers
    from prodinf.engine.registry import registry
    from prodinf.engine.runner import Runner
    from prodinf.engine.service import Jobs
    from prodinf.store import JobStore, upgrade

    load_drivers()
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
        store = JobStore(settings.store_url)
        upgrade(store)
        summary, _ = Jobs(store, registry, settings, lambda *a, **k: None).submit(kind, params)
        Runner(store, registry, settings, lambda *a, **k: None).drive(summary["id"])
        detail = store.describe(summary["id"])
        store.dispose()
        return detail


def child(src: str, tgt: str) -> None:
    """``--child``: run copy_database and print its outcome as JSON."""
    started = time.monotonic()
    detail = drive("copy_database", {"src_uri": src, "tgt_uri": tgt})
    created = datetime.fromisoformat(detail["created_at"])
    finished = datetime.fromisoformat(detail["finished_at"])
    steps = {
        step["name"]: (
            datetime.fromisoformat(step["finished_at"]) - datetime.fromisoformat(step["started_at"])
        ).total_seconds()
        for step in detail["steps"]
        if step["started_at"] and step["finished_at"]
    }
    data = next((s["output"] for s in detail["steps"] if s["name"] == "data"), None) or {}
    out = {
        "status": detail["status"],
        "steps": steps,
        # Inside the data step: each phase's seconds summed over the tables (they overlap).
        "phases": data.get("phases") or {},
        # Submission to end, as a running worker sees it; the process's own start
        # (imports, migrating the bench's fresh store) is reported apart.
        "seconds": (finished - created).total_seconds(),
        "process_seconds": time.monotonic() - started,
        "result": detail.get("result"),
        "error": detail.get("error"),
    }
    print(json.dumps(out))


def prodinf_copy(src: DatabaseURI, tgt: DatabaseURI) -> tuple[dict[str, Any], float]:
    """The copy in a child process; its outcome and its peak RSS in MiB."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", src.secret(), tgt.secret()],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"copy_database child failed ({proc.returncode})")
    return json.loads(output), usage.ru_maxrss / 1024


def native_copy(src: DatabaseURI, tgt: DatabaseURI) -> tuple[float, float]:
    """Seconds to create the target database, then to copy the whole database into it
    through the native pipe (as ``createdb tgt && pg_dump src | psql tgt``)."""
    began = time.monotonic()
    tgt.create()
    created = time.monotonic() - began
    if src.engine_name == "postgresql":
        url = src.url
        env = {**os.environ, "PGPASSWORD": str(url.password or "")}
        conn = ["-h", str(url.host), "-p", str(url.port or 5432), "-U", str(url.username)]
        dump = ["pg_dump", *conn, "--no-owner", "--no-privileges", src.database]
        load = ["psql", *conn, "-q", "-X", "-v", "ON_ERROR_STOP=1", tgt.database]
    else:
        url = src.url
        env = {**os.environ, "MYSQL_PWD": str(url.password or "")}
        conn = ["--protocol=TCP", f"--host={url.host}", f"--port={url.port or 3306}"]
        conn.append(f"--user={url.username}")
        dump = ["mysqldump", *conn, "--single-transaction", "--quick", src.database]
        load = ["mysql", *conn, tgt.database]
    started = time.monotonic()
    producer = subprocess.Popen(dump, stdout=subprocess.PIPE, env=env)
    consumer = subprocess.run(load, stdin=producer.stdout, env=env, stdout=subprocess.DEVNULL)
    assert producer.stdout is not None
    producer.stdout.close()
    if producer.wait() or consumer.returncode:
        raise SystemExit(f"native copy failed: {dump[0]} | {load[0]}")
    return created, time.monotonic() - started


def settle(src: DatabaseURI) -> None:
    """Start each copy from the same state of the server (PostgreSQL): the source as a
    database in use is, vacuumed and analyzed (its rows' visibility already known, as
    autovacuum leaves them; on a table just built, the first reader, here the first
    copy, would pay for it and the second not), and nothing left for the checkpointer
    to write from the build or the copy before (the second copy would pay for it)."""
    if src.engine_name != "postgresql":
        return
    engine = src.create_engine(isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE)")
            conn.exec_driver_sql("CHECKPOINT")
    finally:
        engine.dispose()


def healthcheck_seconds(src: DatabaseURI) -> tuple[float, str]:
    """Seconds for the whole healthcheck catalogue, and how many checks passed."""
    started = time.monotonic()
    detail = drive("healthcheck", {"database_uri": src.secret()})
    seconds = time.monotonic() - started
    result = detail.get("result") or (detail.get("error") or {}).get("details") or {}
    s = result.get("summary") or {}
    return seconds, (
        f"{s.get('run')} checks run, {s.get('passed')} passed, {s.get('skipped')} skipped; "
        f"job {detail['status']}"
    )


def bench(engine: str, genes: int, keep: bool, rounds: int) -> tuple[float, list[str]]:
    server = DatabaseURI.parse(SERVERS[engine])
    tag = uuid.uuid4().hex[:6]
    # Named like a real core database so every healthcheck of the catalogue applies.
    species = f"bench{tag}"
    src = server.with_database(f"{species}_core_115_38")
    made: list[DatabaseURI] = [src]
    lines: list[str] = []
    try:
        started = time.monotonic()
        rows = sum(build_core_like(src, genes=genes, species=species).values())
        lines.append(f"{engine}: built {rows:,} rows in {time.monotonic() - started:.1f}s")
        runs = []
        for n in range(rounds):
            tgt = server.with_database(f"prodinf_bench_copy_{tag}_{n}")
            nat = server.with_database(f"prodinf_bench_native_{tag}_{n}")
            made += [tgt, nat]
            settle(src)
            outcome, rss = prodinf_copy(src, tgt)
            if outcome["status"] != "succeeded":
                raise SystemExit(f"copy_database {outcome['status']}: {outcome['error']}")
            # Both from no target database: prodinf's time includes creating it (its
            # prepare step), so the native pipe's includes the same CREATE DATABASE.
            settle(src)
            created, piped = native_copy(src, nat)
            ratio = (created + piped) / outcome["seconds"]
            runs.append((ratio, outcome, rss, created, piped))
            if not keep:  # each round from the same server: no copies left behind
                for uri in (tgt, nat):
                    uri.drop()
        hc_seconds, hc = healthcheck_seconds(src)
        lines.append(f"{engine}: healthcheck catalogue on {rows:,} rows: {hc_seconds:.1f}s ({hc})")
        # The round of the median ratio (one run of either copy wobbles by a tenth).
        ratio, outcome, rss, created, piped = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
        result = outcome["result"]
        ours, native_seconds = rows / outcome["seconds"], created + piped
        lines.append(f"{engine}: copy_database where the time goes: {_phases(outcome)}")
        lines.append(
            f"{engine}: ratio of each round: {', '.join(f'{r[0]:.2f}' for r in runs)}; "
            "the median round:"
        )
        lines.append(
            f"{engine}: copy_database {ours:,.0f} rows/s ({outcome['seconds']:.1f}s from "
            f"submission to end, {outcome['process_seconds']:.1f}s with the process start, "
            f"method {result['method']}, data step {result['rows_per_second']:,} rows/s, "
            f"verified {result['checksums']} checksums, peak RSS {rss:.0f} MiB); "
            f"native {rows / native_seconds:,.0f} rows/s ({native_seconds:.2f}s: CREATE "
            f"DATABASE {created:.2f}s, then the pipe {piped:.2f}s) ratio={ratio:.2f}"
        )
        return ratio, lines
    finally:
        if not keep:
            for uri in made:
                uri.drop()


def _phases(outcome: dict[str, Any]) -> str:
    """Each step's wall seconds, the time between them (the store's transitions), and
    the data step's load, keys (and indexes) and checksum seconds summed over its tables."""
    steps: dict[str, float] = outcome["steps"]
    shown = [f"{name} {seconds:.2f}s" for name, seconds in steps.items()]
    shown.append(f"between steps {outcome['seconds'] - sum(steps.values()):.2f}s")
    inside = outcome.get("phases") or {}
    if inside:
        tables = ", ".join(f"{n} {s:.2f}s" for n, s in inside.items())
        shown.append(f"(data step, summed over its tables as they overlap: {tables})")
    return "; ".join(shown)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--genes", type=int, default=45000, help="about 22.8 rows per gene")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--rounds", type=int, default=3, help="copies of each kind")
    args = parser.parse_args()
    ratios: dict[str, float] = {}
    for engine in ("postgresql", "mysql"):
        ratios[engine], lines = bench(engine, args.genes, args.keep, args.rounds)
        print("\n".join(lines), flush=True)
    print(f"ratio={ratios['mysql']:.2f}")


if __name__ == "__main__":
    main()
