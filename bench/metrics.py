"""A scrape of ``/metrics``, the jobs list page and ``GET /api/v1/jobs`` with a million jobs.

    python bench/metrics.py [--jobs 1000000] [--runs 20] [--reload]

Fills a PostgreSQL database of its own (``BENCH_METRICS_POSTGRES_URL``, by default
``prodinf_bench_metrics`` on 127.0.0.1; created if missing, never another's) with
``--jobs`` jobs and their history, written in bulk by the server (``INSERT ... SELECT``
over ``generate_series``, a few statements), not through the API: three steps and five
history events a job, over 90 days, twelve kinds on the four queues, one job in 12 a
handover. Most have ended (succeeded, and one in a hundred each failed, cancelled and
reverted); 2,000 are queued, 1,000 running and 3,000 waiting. The rows are kept for the
next run (``--reload`` writes them again).

Then, in this process, against a portal on that store and RabbitMQ
(``BENCH_AMQP_URL``; queues of its own, deleted at the end), each request ``--runs``
times after 3 warm-ups, through Flask's test client: ``GET /metrics``, ``GET /jobs`` (the
jobs list page) and ``GET /api/v1/jobs``; and, the same way, a bare Flask endpoint that
answers "ok". Each line gives the median and the slowest in milliseconds and
``ratio = median / the bare endpoint's median``. Before that, the plan PostgreSQL
chooses for each of the scrape's store queries, to show they go through indexes.
The last line is ``scrape_ms=<median of GET /metrics>``; the target is under 1000.
"""

from __future__ import annotations

# isort: off
import benchpath  # noqa: F401  (first: it keeps this folder from shadowing the standard library)
# isort: on

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from kombu import Connection
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from prodinf.config import Settings
from prodinf.portal import create_app
from prodinf.status import ACTIVE, JobStatus, StepStatus
from prodinf.store import JobStore, upgrade, workers
from prodinf.store.gauges import unfinished
from prodinf.store.models import JOBS, STEPS
from prodinf.store.types import utcnow

POSTGRES = os.environ.get(
    "BENCH_METRICS_POSTGRES_URL",
    "postgresql+psycopg://postgres@127.0.0.1:5432/prodinf_bench_metrics",
)
AMQP = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
KINDS = [
    ("handover", "handover"),
    ("healthcheck", "jobs"),
    ("copy_database", "jobs"),
    ("register_metadata", "jobs"),
    ("http_get", "jobs"),
    ("wait_for_url", "jobs"),
    ("remote_job", "event"),
    ("event", "event"),
    ("event_notice", "email"),
    ("job_notification", "email"),
    ("email_when_complete", "email"),
    ("bench_other", "jobs"),
]
HANDOVER_STEPS = ("healthcheck", "copy", "register")
T0 = time.time()


def say(message: str) -> None:
    print(f"[+{time.time() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def create_database(url: str) -> None:
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
        )
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def _case(expression: str, values: list[str]) -> str:
    """SQL picking ``values[expression]`` (``expression`` an integer from 0)."""
    whens = " ".join(f"WHEN {i} THEN '{v}'" for i, v in enumerate(values))
    return f"(CASE {expression} {whens} END)"


#: A job's status from its number ``i``: per thousand, 2 queued, 1 running, 3 waiting;
#: per hundred, one each failed, cancelled, reverted; the rest succeeded.
STATUS = f"""(CASE
    WHEN i % 1000 < 2 THEN '{JobStatus.QUEUED}'
    WHEN i % 1000 = 2 THEN '{JobStatus.RUNNING}'
    WHEN i % 1000 < 6 THEN '{JobStatus.WAITING}'
    WHEN i % 100 = 7 THEN '{JobStatus.FAILED}'
    WHEN i % 100 = 8 THEN '{JobStatus.CANCELLED}'
    WHEN i % 100 = 9 THEN '{JobStatus.REVERTED}'
    ELSE '{JobStatus.SUCCEEDED}' END)"""


def fill(store: JobStore, jobs: int, *, details: bool = True) -> None:
    """Write ``jobs`` jobs, their steps and their history (unless not ``details``), in
    bulk, server-side."""
    kind = _case("i % 12", [k for k, _ in KINDS])
    queue = _case("i % 12", [q for _, q in KINDS])
    # created over the last 90 days, newest last; an ended job ended 10 s later
    created = f"now() - make_interval(secs => ({jobs} - i) * 7776000.0 / {jobs})"
    with store.engine.begin() as conn:
        for table in ("prodinf_history", "prodinf_steps", "prodinf_jobs", "prodinf_workers"):
            conn.execute(text(f"TRUNCATE {table} CASCADE"))
        say(f"writing {jobs:,} jobs")
        conn.execute(
            text(f"""
            INSERT INTO prodinf_jobs (id, kind, queue, status, params, progress_done,
                progress_total, progress_message, submitted_by, cancel_requested,
                created_at, updated_at, started_at, finished_at, next_run_at)
            SELECT md5(i::text)::uuid::text, {kind}, {queue}, s, '{{"n": 1}}'::jsonb,
                0, 3, s, 'bench', false, c,
                CASE WHEN s = 'queued' THEN c ELSE c + interval '10 seconds' END,
                CASE WHEN s = 'queued' THEN NULL ELSE c + interval '1 second' END,
                CASE WHEN s IN ('queued', 'running', 'waiting') THEN NULL
                     ELSE c + interval '10 seconds' END,
                CASE WHEN s IN ('queued', 'running', 'waiting') THEN now() + interval '1 hour'
                     ELSE NULL END
            FROM (SELECT i, {STATUS} AS s, {created} AS c
                  FROM generate_series(1, {jobs}) AS i) AS g
            """)
        )
    if details:
        write_details(store, jobs)
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def write_details(store: JobStore, jobs: int) -> None:
    """Write each job's steps and history."""
    with store.engine.begin() as conn:
        say("writing their steps")
        step_name = (
            f"CASE WHEN i % 12 = 0 THEN (ARRAY{list(HANDOVER_STEPS)})[p + 1] ELSE 's' || p END"
        )
        conn.execute(
            text(f"""
            INSERT INTO prodinf_steps (job_id, name, position, after, status, attempts, state)
            SELECT md5(i::text)::uuid::text, {step_name}, p, '[]'::jsonb,
                CASE
                  WHEN s = 'succeeded' THEN '{StepStatus.SUCCEEDED}'
                  WHEN s = 'queued' THEN '{StepStatus.PENDING}'
                  WHEN p = 0 THEN '{StepStatus.SUCCEEDED}'
                  WHEN p = 2 THEN '{StepStatus.PENDING}'
                  WHEN s = 'running' THEN '{StepStatus.RUNNING}'
                  WHEN s = 'waiting' THEN '{StepStatus.WAITING}'
                  WHEN s = 'cancelled' THEN '{StepStatus.CANCELLED}'
                  ELSE '{StepStatus.FAILED}' END,
                1, '{{}}'::jsonb
            FROM (SELECT i, {STATUS} AS s FROM generate_series(1, {jobs}) AS i) AS g,
                 generate_series(0, 2) AS p
            """)
        )
        say("writing their history")
        conn.execute(
            text(f"""
            INSERT INTO prodinf_history (job_id, at, event, step, message)
            SELECT md5(i::text)::uuid::text, now(),
                CASE WHEN e = 0 THEN 'job.submitted' WHEN e = 4 THEN 'job.' || s
                     ELSE 'step.succeeded' END,
                CASE WHEN e IN (0, 4) THEN NULL ELSE 's' || (e - 1) END,
                'bench'
            FROM (SELECT i, {STATUS} AS s FROM generate_series(1, {jobs}) AS i) AS g,
                 generate_series(0, 4) AS e
            """)
        )


def explain(store: JobStore) -> None:
    """Print the plan of each store query a scrape runs (what ``unfinished`` and
    ``workers.recent`` execute), and whether an index serves it."""
    active = sorted(ACTIVE)
    queries = {
        "jobs by kind, queue and status": select(
            JOBS.c.kind, JOBS.c.queue, JOBS.c.status, func.count(), func.min(JOBS.c.updated_at)
        )
        .where(JOBS.c.status.in_(active))
        .group_by(JOBS.c.kind, JOBS.c.queue, JOBS.c.status),
        "waiting steps by kind": select(JOBS.c.kind, func.count())
        .select_from(JOBS.join(STEPS, STEPS.c.job_id == JOBS.c.id))
        .where(JOBS.c.status.in_(active), STEPS.c.status == StepStatus.WAITING)
        .group_by(JOBS.c.kind),
        "handovers' steps": select(STEPS.c.job_id, STEPS.c.name, STEPS.c.status)
        .select_from(JOBS.join(STEPS, STEPS.c.job_id == JOBS.c.id))
        .where(JOBS.c.status.in_(active), JOBS.c.kind == "handover")
        .order_by(STEPS.c.job_id, STEPS.c.position),
    }
    with store.engine.connect() as conn:
        for name, query in queries.items():
            compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
            plan = [r[0] for r in conn.execute(text(f"EXPLAIN ANALYZE {compiled}"))]
            scans = [line.strip() for line in plan if "Scan" in line]
            seq = [s for s in scans if s.startswith(("Seq Scan", "->  Seq Scan"))]
            total = next((line for line in plan if line.startswith("Execution Time")), "")
            verdict = "SEQUENTIAL SCAN" if seq else "indexes only"
            print(f"plan  {name}: {verdict}; {total}")
            for scan in scans:
                print(f"        {scan.removeprefix('->  ')[:110]}")


def timed(call: Callable[[], object], runs: int) -> list[float]:
    for _ in range(3):
        call()
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        took.append((time.perf_counter() - start) * 1000)
    return took


def get(app: Flask, path: str) -> Callable[[], object]:
    client = app.test_client()

    def call() -> object:
        answer = client.get(path)
        if answer.status_code != 200:
            raise SystemExit(f"GET {path} answered {answer.status_code}")
        return answer.get_data()

    return call


def bare() -> Flask:
    app = Flask("bare")
    app.add_url_rule("/ok", "ok", lambda: "ok")
    return app


@contextmanager
def portal(settings: Settings) -> Iterator[Flask]:
    """A portal on ``settings``, its queues declared on RabbitMQ as a worker would declare
    them, and deleted at the end with its runtime closed."""
    app = create_app(settings)
    rt = app.extensions["prodinf"]
    try:
        with Connection(AMQP) as conn:
            for queue in rt.celery.conf.task_queues:
                queue(conn.default_channel).declare()
        yield app
    finally:
        with Connection(AMQP) as conn:
            for queue in rt.celery.conf.task_queues:
                conn.default_channel.queue_delete(queue.name)
        rt.close()


def bare_median(runs: int) -> float:
    """The median of ``GET /ok`` on a bare Flask endpoint, in milliseconds, printed."""
    base = statistics.median(timed(get(bare(), "/ok"), runs))
    print(f"bare   GET /ok (a bare Flask endpoint): median {base:.3f} ms")
    return base


def store_args(doc: str) -> argparse.Namespace:
    """The command line of a bench on a store of a million jobs: ``--jobs``, ``--runs``
    and ``--reload``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--reload", action="store_true", help="write the rows again")
    return parser.parse_args()


def main() -> None:
    args = store_args(__doc__)

    create_database(POSTGRES)
    home = Path(tempfile.mkdtemp(prefix="bench-metrics-"))  # nothing of it is used but its path
    tag = os.getpid()
    settings = Settings(
        home=home,
        database_url=POSTGRES,
        broker_url=AMQP,
        **{
            f"queue_{q}": f"bench-metrics-{tag}-{q}" for q in ("handover", "event", "email", "jobs")
        },
    )
    store = JobStore(settings.store_url)
    upgrade(store)
    with store.engine.connect() as conn:
        held = conn.scalar(select(func.count()).select_from(JOBS))
    if args.reload or held != args.jobs:
        fill(store, args.jobs)
    else:
        say(f"the store holds {held:,} jobs already (--reload writes them again)")
    for n, (_, queue) in enumerate(KINDS[:4]):
        workers.seen(store, f"bench-{n}@host", [settings.queue_for(queue)], n, utcnow())
    with store.engine.connect() as conn:
        by_status = conn.execute(select(JOBS.c.status, func.count()).group_by(JOBS.c.status))
        counts = {str(status): int(n) for status, n in by_status}
        steps = conn.scalar(select(func.count()).select_from(STEPS))
        history = conn.scalar(text("SELECT count(*) FROM prodinf_history"))
    print(f"store  {sum(counts.values()):,} jobs {counts}, {steps:,} steps, {history:,} history")
    explain(store)
    found = unfinished(store, handover_kind="handover")
    active, waits = sum(found.jobs.values()), sum(found.waits.values())
    print(f"found  {active:,} jobs not over, {waits:,} waits, handovers by stage {found.stages}")

    try:
        with portal(settings) as app:
            base = bare_median(args.runs * 5)
            results = measure(app, store, base, args.runs)
    finally:
        store.dispose()
        shutil.rmtree(home, ignore_errors=True)
    print(f"scrape_ms={results['scrape']:.1f}")


def measure(app: Flask, store: JobStore, base: float, runs: int) -> dict[str, float]:
    """Time the scrape and the lists, and the store's gauges alone; the medians by name."""
    results = {}
    for name, path in (
        ("scrape", "/metrics"),
        ("jobs page", "/jobs"),
        ("api list", "/api/v1/jobs"),
    ):
        took = timed(get(app, path), runs)
        median = results[name] = statistics.median(took)
        print(f"{name:<10} GET {path}: median {median:.1f} ms, slowest {max(took):.1f} ms, "
              f"ratio={median / base:.0f}")  # fmt: skip
    gauges = statistics.median(timed(lambda: unfinished(store, handover_kind="handover"), runs))
    print(f"part   the store's gauges alone: median {gauges:.1f} ms")
    return results


if __name__ == "__main__":
    main()
