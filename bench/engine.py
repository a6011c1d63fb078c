"""Throughput of prodinf's engine against raw Celery on the same broker, in one run.

    python bench/engine.py [--jobs 300] [--concurrency 2]

For each stack (embedded defaults, then RabbitMQ + PostgreSQL) it runs N jobs
of a 4-step no-op flow through prodinf (store, leases, history and all) and N
raw Celery chains of 4 no-op tasks, each on a fresh worker with the same pool,
concurrency, prefetch and acks, and prints jobs/s for both. The last line is
``ratio=<prodinf/raw>`` on RabbitMQ + PostgreSQL; the line before it the same on
embedded defaults.

Each worker first runs N untimed jobs (chains), then the store is vacuumed and analyzed, as
autovacuum does within a minute to any store in use: the plans PostgreSQL caches
for the store's prepared statements are then those of a store in use, not of
tables just created (on a store not a minute old, index lookups are planned as
scans of tables thought empty; the line ``new store`` gives prodinf's rate on the
first N jobs of the freshly created database, for comparison).
"""

from __future__ import annotations

# isort: off
import benchpath  # first: it keeps this folder from shadowing the standard library
# isort: on

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from celery import chain
from sqlalchemy import func, select

from bench import raw_celery
from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.runtime import Runtime
from prodinf.store import JobRow, upgrade

ROOT = benchpath.ROOT

AMQP = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/prodinf_bench"
)


def start_worker(
    module: str, queue: str, concurrency: int, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            module,
            "worker",
            "-Q",
            queue,
            "-c",
            str(concurrency),
            "-P",
            "prefork",
            "-l",
            "warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"bench-{uuid.uuid4().hex[:6]}@%h",
        ],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    out.close()
    time.sleep(4)  # let the pool start before the clock does
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(count: callable, n: int, timeout: float = 600) -> None:  # type: ignore[valid-type]
    deadline = time.monotonic() + timeout
    while count() < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {count()}/{n} done")
        time.sleep(0.05)


def run_prodinf(settings: Settings, jobs: int, concurrency: int, logs: Path) -> tuple[float, float]:
    """prodinf's jobs/s on a store in use, and on the first ``jobs`` of a new store."""
    env = {
        f"PRODINF_{k.upper()}": (",".join(v) if isinstance(v, list) else str(v))
        for k, v in settings.model_dump().items()
        if v is not None and k != "secret_key"
    }
    rt = Runtime(settings, create_celery(settings))
    upgrade(rt.store)
    worker = start_worker(
        "prodinf.worker", settings.queue_jobs, concurrency, env, logs / "prodinf-worker.log"
    )
    try:

        def succeeded() -> int:
            with rt.store.session() as session:
                return (
                    session.scalar(
                        select(func.count()).select_from(JobRow).where(JobRow.status == "succeeded")
                    )
                    or 0
                )

        def timed(done: int) -> float:
            started = time.perf_counter()
            for _ in range(jobs):
                rt.jobs.submit("bench_noop4", {})
            wait_for(succeeded, done + jobs)
            return jobs / (time.perf_counter() - started)

        new_store = timed(0)  # the warm-up
        _analyze(rt)
        return timed(jobs), new_store
    finally:
        stop(worker)
        rt.close()


def _analyze(rt: Runtime) -> None:
    """What autovacuum does to a store in use: VACUUM ANALYZE its tables (PostgreSQL)."""
    from sqlalchemy import text

    if rt.store.engine.dialect.name != "postgresql":
        return
    with rt.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def run_raw(broker: str, folder: str | None, jobs: int, concurrency: int, logs: Path) -> float:
    queue = f"bench-raw-{uuid.uuid4().hex[:6]}"
    env = {"BENCH_BROKER_URL": broker, "BENCH_QUEUE": queue}
    if folder:
        env["BENCH_BROKER_FOLDER"] = folder
    app = raw_celery.make_app(broker, folder, queue)
    noop, done_task = app.tasks["bench.noop"], app.tasks["bench.done"]
    done_file = logs / f"{queue}.done"
    done_file.touch()
    worker = start_worker("bench.raw_celery", queue, concurrency, env, logs / "raw-worker.log")
    try:

        def timed(done: int) -> float:
            started = time.perf_counter()
            for _ in range(jobs):
                chain(noop.si(), noop.si(), noop.si(), done_task.si(str(done_file))).apply_async(
                    queue=queue
                )
            wait_for(lambda: len(done_file.read_bytes()) // 2, done + jobs)
            return jobs / (time.perf_counter() - started)

        timed(0)  # the warm-up, as prodinf's
        return timed(jobs)
    finally:
        stop(worker)
        if not folder:
            with app.connection_for_write() as conn:
                conn.default_channel.queue_delete(queue)
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prodinf-bench-"))
    common = {"plugins": ["bench.kinds"], "worker_concurrency": args.concurrency}

    embedded = Settings(home=work / "embedded", **common)  # type: ignore[arg-type]
    folder = work / "raw-broker"
    folder.mkdir()
    p_emb, _ = run_prodinf(embedded, args.jobs, args.concurrency, work)
    r_emb = run_raw("filesystem://localhost//", str(folder), args.jobs, args.concurrency, work)
    print(f"embedded: prodinf {p_emb:.1f} jobs/s, raw celery chain {r_emb:.1f} chains/s")

    servers = Settings(
        home=work / "servers",
        database_url=POSTGRES,
        broker_url=AMQP,
        queue_jobs=f"bench-{uuid.uuid4().hex[:6]}",
        **common,
    )  # type: ignore[arg-type]
    _ensure_database(POSTGRES)
    p_srv, p_new = run_prodinf(servers, args.jobs, args.concurrency, work)
    r_srv = run_raw(AMQP, None, args.jobs, args.concurrency, work)
    print(f"new store: prodinf {p_new:.1f} jobs/s on the first {args.jobs} jobs of a new database")
    print(f"rabbitmq+postgresql: prodinf {p_srv:.1f} jobs/s, raw celery chain {r_srv:.1f} chains/s")
    print(f"embedded ratio={p_emb / r_emb:.2f}")
    print(f"ratio={p_srv / r_srv:.2f}")


def _ensure_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    engine = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if not conn.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
        ):
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
        else:
            conn.execute(text(f'DROP DATABASE "{parsed.database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    engine.dispose()


if __name__ == "__main__":
    main()
