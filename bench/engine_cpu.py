"""The engine's own cost per job, in one process: submit and drive 4-step no-op jobs.

    python bench/engine_cpu.py [--jobs 300] [--store sqlite|postgresql]

No broker and no worker: ``Jobs.submit`` with a publish that only records, then
``Runner.drive`` of each job here. It prints CPU milliseconds per job for the
submissions and for the runs, and the wall time per job. CPU time on a shared
machine wobbles; for a figure that does not, count instructions:
``valgrind --tool=callgrind python bench/engine_cpu.py --jobs 100`` and again with
``--jobs 300``; the difference over 200 is the instructions per job.
"""

from __future__ import annotations

# isort: off
import benchpath  # noqa: F401  (first: it keeps this folder from shadowing the standard library)
# isort: on

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from prodinf import Flow, Step
from prodinf.config import Settings
from prodinf.engine.registry import Registry, job_kind
from prodinf.engine.runner import Runner
from prodinf.engine.service import Jobs
from prodinf.store import JobStore, upgrade

POSTGRES = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/prodinf_bench_cpu"
)
WARM_UP = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="prodinf-bench-cpu-"))
    url = None
    if args.store == "postgresql":
        _fresh_database(POSTGRES)
        url = POSTGRES
    settings = Settings(home=home, database_url=url)
    store = JobStore(settings.store_url)
    upgrade(store)
    registry = Registry()
    job_kind("noop4", into=registry)(
        lambda _params: Flow.of(*(Step(f"s{i}", lambda ctx: None) for i in range(4)))
    )
    jobs = Jobs(store, registry, settings, lambda job_id, queue: None)
    runner = Runner(store, registry, settings, lambda job_id, queue: None)
    try:
        for _ in range(WARM_UP):
            runner.drive(jobs.submit("noop4", {})[0]["id"])
        cpu0, wall0 = time.process_time(), time.perf_counter()
        ids = [jobs.submit("noop4", {})[0]["id"] for _ in range(args.jobs)]
        cpu1 = time.process_time()
        for job_id in ids:
            runner.drive(job_id)
        cpu2, wall2 = time.process_time(), time.perf_counter()
        n = args.jobs
        print(
            f"{args.store}: submit {1000 * (cpu1 - cpu0) / n:.2f} ms CPU/job, "
            f"run {1000 * (cpu2 - cpu1) / n:.2f} ms CPU/job, "
            f"wall {1000 * (wall2 - wall0) / n:.2f} ms/job"
        )
    finally:
        store.dispose()
        shutil.rmtree(home, ignore_errors=True)


def _fresh_database(url: str) -> None:
    parsed = make_url(url)
    engine = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    engine.dispose()


if __name__ == "__main__":
    main()
