"""Unrelated email jobs with 10,000 notifications pending vs none, on one email worker.

    python bench/email.py [--pending 10000] [--urls 1] [--jobs 100] [--rounds 3]
                          [--interval 60] [--no-keepalive]

One run, on RabbitMQ + PostgreSQL, with a real SMTP server (aiosmtpd) and a real
HTTP status server on loopback, and one worker started as users start it
(``celery -A prodinf.email_tasks worker``, concurrency 2):

1. throughput of N unrelated email jobs (each mails the result of a URL that is
   already complete) with nothing else pending;
2. ``--pending`` notifications submitted on ``--urls`` distinct URLs that never
   finish (1: all on one URL; 10000: each its own), each to be looked at every
   ``--interval`` seconds, then the same N unrelated jobs.

Each phase's throughput is the median of ``--rounds`` rounds of N jobs (one round of
100 lasts about two seconds here, and one of them wobbles by a fifth: a burst of the
kernel's or the server's housekeeping is enough); every round is printed.

It prints the worker's peak RSS (main process and pool children) in each phase, the
worker's CPU while idle (ms per second, main process and pool children) with nothing
pending and with the notifications pending, both throughputs, and last
``ratio=<with pending/without>``. Target: >= 0.95, the idle CPU low.

The status server keeps connections alive (HTTP/1.1), as web servers do;
``--no-keepalive`` makes it close each one (HTTP/1.0), so every look connects anew.
"""

from __future__ import annotations

# isort: off
import benchpath  # first: it keeps this folder from shadowing the standard library
# isort: on

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import func, select

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.runtime import Runtime
from prodinf.store import JobRow, upgrade
from tests.conftest import env_for
from tests.integration.servers import Smtp, StatusServer, free_port
from tests.procstat import tree_cpu, tree_rss

ROOT = benchpath.ROOT

AMQP = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/prodinf_bench_email"
)


def idle_cpu(pid: int, seconds: float, status: StatusServer) -> tuple[float, float]:
    """Milliseconds of CPU per second the worker uses while given no new work, and the
    looks per second the status server answered meanwhile."""
    before, looks = tree_cpu(pid), sum(status.looks.values())
    time.sleep(seconds)
    return (
        (tree_cpu(pid) - before) * 1000 / seconds,
        (sum(status.looks.values()) - looks) / seconds,
    )


def settle(url: str) -> None:
    """VACUUM ANALYZE the store, so neither phase pays for the other's dead rows."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, tree_rss(self.pid))

    def reset(self) -> int:
        peak, self.peak = self.peak, tree_rss(self.pid)
        return peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def unrelated(rt: Runtime, smtp: Smtp, status: StatusServer, jobs: int, tag: str) -> float:
    """Submit ``jobs`` emails on URLs that are already complete; jobs/s until all are sent."""
    before = smtp.inbox.count()
    started = time.perf_counter()
    for i in range(jobs):
        rt.jobs.submit(
            "email_when_complete",
            {"url": f"{status.base}/job/{tag}-{i}?running=0", "address": "u@example.org"},
        )
    deadline = time.monotonic() + 600
    while smtp.inbox.count() < before + jobs:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {smtp.inbox.count() - before}/{jobs} emails")
        time.sleep(0.02)
    return jobs / (time.perf_counter() - started)


def rounds(
    rt: Runtime, smtp: Smtp, status: StatusServer, args: argparse.Namespace, tag: str
) -> float:
    """The median of ``args.rounds`` rounds of :func:`unrelated`, each printed."""
    rates = [unrelated(rt, smtp, status, args.jobs, f"{tag}{n}") for n in range(args.rounds)]
    print("  rounds: " + ", ".join(f"{rate:.1f}" for rate in rates) + " emails/s", flush=True)
    return statistics.median(rates)


def count(rt: Runtime, status: str) -> int:
    with rt.store.session() as session:
        return int(
            session.scalar(select(func.count()).select_from(JobRow).where(JobRow.status == status))
            or 0
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--urls", type=int, default=1, help="distinct URLs pending")
    parser.add_argument("--jobs", type=int, default=100, help="unrelated jobs per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per phase (median)")
    parser.add_argument("--idle", type=float, default=15.0, help="seconds of idle CPU measured")
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument(
        "--no-keepalive",
        dest="keepalive",
        action="store_false",
        help="the status server closes each connection (HTTP/1.0)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="prodinf-bench-email-"))
    smtp = Smtp(free_port())
    smtp.start()
    status = StatusServer(keepalive=args.keepalive)
    status.start()
    _fresh_database(POSTGRES)
    tag = uuid.uuid4().hex[:6]
    settings = Settings(  # type: ignore[call-arg]
        home=work,
        database_url=POSTGRES,
        broker_url=AMQP,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        poll_interval=args.interval,
        queue_email=f"bench-{tag}-email",
        queue_jobs=f"bench-{tag}-jobs",
        queue_event=f"bench-{tag}-event",
        queue_handover=f"bench-{tag}-handover",
    )
    rt = Runtime(settings, create_celery(settings))
    upgrade(rt.store)
    log = open(work / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "prodinf.email_tasks",
            "worker",
            "-l",
            "warning",
            "-c",
            "2",
            "-n",
            f"bench-{tag}@%h",
        ],
        env=env_for(settings, PYTHONPATH=str(ROOT)),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        time.sleep(5)
        rss = PeakRss(worker.pid)
        unrelated(rt, smtp, status, 10, f"{tag}-warm")  # start the pool's connections
        settle(POSTGRES)
        idle_without, _ = idle_cpu(worker.pid, args.idle, status)
        rss.reset()
        without = rounds(rt, smtp, status, args, f"{tag}-a")
        peak_without = rss.reset()
        print(
            f"no notifications pending: {without:.1f} emails/s (median round), worker peak RSS "
            f"{peak_without / 2**20:.0f} MiB",
            flush=True,
        )

        def pending_url(i: int) -> str:
            if args.urls <= 1:
                return f"{status.base}/never"
            return f"{status.base}/job/pending-{i % args.urls}?running=1000000000"

        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: rt.jobs.submit(
                        "email_when_complete",
                        {"url": pending_url(i), "address": f"p{i}@example.org"},
                    ),
                    range(args.pending),
                )
            )
        while count(rt, "waiting") < args.pending:
            time.sleep(0.5)
        print(
            f"{args.pending} notifications on {max(1, args.urls)} URL(s) submitted and waiting in "
            f"{time.perf_counter() - started:.0f}s",
            flush=True,
        )

        settle(POSTGRES)
        unrelated(rt, smtp, status, 10, f"{tag}-warm2")
        idle_with, rate = idle_cpu(worker.pid, args.idle, status)
        print(
            f"worker CPU while idle: {idle_without:.0f} ms/s with nothing pending, "
            f"{idle_with:.0f} ms/s with the notifications pending ({rate:.0f} looks/s, "
            f"{(idle_with - idle_without) / max(rate, 1):.2f} ms of CPU a look)",
            flush=True,
        )
        looks_before = sum(status.looks.values())
        with_pending = rounds(rt, smtp, status, args, f"{tag}-b")
        peak_with = rss.reset()
        looks_during = sum(status.looks.values()) - looks_before - args.jobs * args.rounds
        waiting = count(rt, "waiting")
        print(
            f"{waiting} notifications pending: {with_pending:.1f} emails/s (median round), "
            "worker peak RSS "
            f"{peak_with / 2**20:.0f} MiB, {looks_during} looks at pending URLs meanwhile",
            flush=True,
        )
        rss.stop()
        print(f"peak_rss_mib={max(peak_with, peak_without) / 2**20:.0f}")
        print(f"ratio={with_pending / without:.2f}")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        rt.close()
        smtp.stop()
        status.stop()


def _fresh_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    engine = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    engine.dispose()


if __name__ == "__main__":
    main()
