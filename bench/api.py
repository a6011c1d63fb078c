"""The jobs API and list page with a million jobs in PostgreSQL, and a submission.

    python bench/api.py [--jobs 1000000] [--runs 20] [--reload]

Builds its own PostgreSQL database (``BENCH_API_POSTGRES_URL``, by default
``prodinf_bench_api`` on 127.0.0.1; created if missing, never another's) holding
``--jobs`` jobs written by the server in a few ``INSERT ... SELECT`` statements
(``bench/metrics.py``'s ``fill``: twelve kinds over 90 days, most ended, 2,000 queued,
1,000 running, 3,000 waiting), and says how long that took (the target is under two
minutes). The rows are kept for the next run (``--reload`` writes them again).

Then, in this process, through Flask's test client against a portal on that store and
RabbitMQ (``BENCH_AMQP_URL``; queues of its own, deleted at the end), with one worker
of the jobs queue running (``celery -A prodinf.worker``, concurrency 2), it times each
request ``--runs`` times after 3 warm-ups and prints the median (p50) and the slowest:

- list pages: the first page of the API and of the web page; filtered by kind and by
  status; deep: the page 500,000 jobs down, by ``offset`` and by the cursor of the page
  before it (what ``next`` carries), and the same for a kind 40,000 down; sorted by
  update; and the dashboard;
- a submission: ``POST /api/v1/jobs`` of an ``http_get`` job (of a URL on a loopback
  server here), which the worker runs meanwhile; its time is broken down into the
  params' validation, the store's insert (its commit), the publish (with RabbitMQ's
  confirm) and the mark that it was sent (the job's next look moved on), the rest being
  the request's own work.

The last line is ``ratio=<0.2 s / the slowest page's p50>``: 1 or more means every page
answers within 0.2 s.
"""

from __future__ import annotations

# isort: off
import benchpath
# isort: on

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import func, select

import prodinf.engine.service as service
from bench.metrics import (
    bare_median,
    create_database,
    fill,
    get,
    portal,
    say,
    store_args,
    timed,
)
from prodinf.config import Settings
from prodinf.engine.registry import Kind
from prodinf.store import JobStore, upgrade
from prodinf.store.models import JOBS

ROOT = benchpath.ROOT
POSTGRES = os.environ.get(
    "BENCH_API_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/prodinf_bench_api"
)
AMQP = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
#: Every page must answer within this.
PAGE_TARGET_MS = 200.0


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def loopback_site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/ok"
    finally:
        server.shutdown()


@contextmanager
def worker(settings: Settings, home: Path) -> Iterator[None]:
    """A worker of the jobs queue, started as users start it."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PRODINF_HOME": str(home),
        "PRODINF_DATABASE_URL": POSTGRES,
        "PRODINF_BROKER_URL": AMQP,
        **{f"PRODINF_QUEUE_{q.upper()}": settings.queue_for(q) for q in QUEUES},
    }
    log = open(home / "worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "prodinf.worker", "worker", "-Q",
         settings.queue_for("jobs"), "-c", "2", "-l", "warning", "--without-gossip",
         "--without-mingle", "-n", f"bench-api-{os.getpid()}@%h"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    log.close()
    time.sleep(5)  # let the pool start before the clock does
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


QUEUES = ("handover", "event", "email", "jobs")


def phases(messages: Any) -> tuple[dict[str, list[float]], Callable[[], None]]:
    """Time the parts of a submission as it runs them (wrapping, not replacing, each):
    the params' validation, the store's insert and the publish; and a way to undo it."""
    took: dict[str, list[float]] = defaultdict(list)
    undo = []

    def wrap(owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                took[phase].append((time.perf_counter() - start) * 1000)

        setattr(owner, name, timed_call)
        undo.append(lambda: setattr(owner, name, original))

    wrap(Kind, "validate", "validate params")
    wrap(service, "insert_job", "insert (commit)")
    wrap(messages, "publish", "publish (confirmed)")
    wrap(service.Messages, "sent", "mark it sent")
    return took, lambda: [u() for u in undo] and None


def deep_cursor(app: Flask, query: str, offset: int) -> str:
    """The ``next`` link of the page just before ``offset`` (what a reader who followed
    the links down holds), as a path."""
    client = app.test_client()
    page = client.get(f"/api/v1/jobs?{query}&limit=50&offset={offset - 50}").get_json()
    return str(page["next"]).removeprefix("http://localhost")


def time_pages(app: Flask, jobs: int, runs: int) -> dict[str, float]:
    """Each list page's p50, printed with its slowest, by name."""
    deep = jobs // 2
    kind_deep = min(40_000, jobs // 24)
    pages = {
        "first (API)": "/api/v1/jobs",
        "first (web page)": "/jobs",
        "by kind": "/api/v1/jobs?kind=http_get",
        "by status": "/api/v1/jobs?status=failed",
        "by kind, web page": "/jobs?kind=http_get",
        f"{deep:,} down, offset": f"/api/v1/jobs?limit=50&offset={deep}",
        f"{deep:,} down, cursor": deep_cursor(app, "sort=created", deep),
        f"kind {kind_deep:,} down, offset": f"/api/v1/jobs?kind=http_get&offset={kind_deep}",
        f"kind {kind_deep:,} down, cursor": deep_cursor(app, "kind=http_get", kind_deep),
        "by update, first": "/api/v1/jobs?sort=updated",
        "dashboard": "/dashboard",
    }
    medians: dict[str, float] = {}
    for name, path in pages.items():
        took = timed(get(app, path), runs)
        medians[name] = statistics.median(took)
        print(f"page   {name:<26} p50 {medians[name]:7.1f} ms, slowest {max(took):7.1f} ms")
    return medians


def time_submission(app: Flask, settings: Settings, home: Path, base: float, runs: int) -> float:
    """The p50 of ``POST /api/v1/jobs`` while a worker runs the jobs, printed with its
    parts; returned."""
    rt = app.extensions["prodinf"]
    with loopback_site() as url, worker(settings, home):
        took_phases, undo = phases(rt.jobs.messages)
        client = app.test_client()

        def submit() -> object:
            answer = client.post("/api/v1/jobs", json={"kind": "http_get", "params": {"url": url}})
            if answer.status_code != 201:
                raise SystemExit(f"POST answered {answer.status_code}: {answer.text}")
            return answer

        posts = timed(submit, runs * 5)
        undo()
    post = statistics.median(posts)
    print(f"submit POST /api/v1/jobs (a worker running): p50 {post:.1f} ms, "
          f"slowest {max(posts):.1f} ms, {post / base:.0f}x the bare endpoint")  # fmt: skip
    parts = 0.0
    for phase, values in took_phases.items():
        p50 = statistics.median(values[3:])  # not the warm-ups
        parts += p50
        print(f"  part {phase:<22} p50 {p50:6.2f} ms")
    print(f"  part {'the rest of the request':<22} p50 {max(0.0, post - parts):6.2f} ms")
    return post


def main() -> None:
    args = store_args(__doc__)

    create_database(POSTGRES)
    home = Path(tempfile.mkdtemp(prefix="bench-api-"))
    tag = os.getpid()
    settings = Settings(
        home=home,
        database_url=POSTGRES,
        broker_url=AMQP,
        **{f"queue_{q}": f"bench-api-{tag}-{q}" for q in QUEUES},
    )
    store = JobStore(settings.store_url)
    upgrade(store)
    with store.engine.connect() as conn:
        held = conn.scalar(select(func.count()).select_from(JOBS))
    if args.reload or not args.jobs <= (held or 0) < args.jobs + 10_000:  # its own posts stay
        start = time.perf_counter()
        fill(store, args.jobs, details=False)
        print(f"built  {args.jobs:,} jobs in {time.perf_counter() - start:.1f} s (target < 120)")
    else:
        say(f"the store holds {held:,} jobs already (--reload writes them again)")

    try:
        with portal(settings) as app:
            base = bare_median(args.runs * 5)
            medians = time_pages(app, args.jobs, args.runs)
            post = time_submission(app, settings, home, base, args.runs)
    finally:
        store.dispose()
        shutil.rmtree(home, ignore_errors=True)
    slowest = max(medians, key=lambda name: medians[name])
    print(f"slowest page: {slowest} ({medians[slowest]:.1f} ms); submission p50 {post:.1f} ms "
          f"(target 20)")  # fmt: skip
    print(f"ratio={PAGE_TARGET_MS / medians[slowest]:.2f}")


if __name__ == "__main__":
    main()
