"""Events on RabbitMQ + PostgreSQL: what fan-out costs, and how soon an end wakes what waits.

    python bench/events.py [--events 200] [--rounds 2] [--paced 60] [--rate 3]
                           [--remote 30] [--keep]

Runs as root. Like ``bench/recovery.py`` it starts its OWN PostgreSQL 15 cluster and
RabbitMQ node on spare ports in a temp dir (the machine's shared servers are never
touched) and removes them at exit, Ctrl-C included. Two prodinfs live on them, every
setting at its default (``bench/events_stack.py``):

A  database ``bench_a``, vhost ``/``: an event worker (``celery -A prodinf.event_tasks
   worker -Q event``) and a jobs worker (``-Q jobs``), each ``-c 2 -P prefork``; for
   the last part also its portal (``python -m prodinf.cli portal``).
B  database ``bench_b``, vhost ``peer``: for the last part only, a portal and one
   worker ``-Q jobs,email``.

Every job that does the work is ``bench_noop4`` (``bench/kinds.py``: four no-op steps).

1. Fan-out, in ``--rounds`` rounds ordered direct, events, events, direct, ... (a drift
   in the machine's load falls on both halves alike). Direct: ``3 N / rounds`` jobs
   submitted with ``Runtime.jobs.submit`` (what ``POST /api/v1/jobs`` calls). Events:
   ``N / rounds`` events recorded with ``record_event`` (what ``POST /api/v1/events``
   calls), each matching three subscriptions of ``bench_noop4``: the same ``3 N`` jobs,
   as children of ``N`` event jobs. Each half is timed from its first submission to
   the ``finished_at`` of its last job (a child ends before its event job).
   ``ratio = direct time / events time``. Printed with each half: the CPU seconds of
   each process (a worker with its pool, PostgreSQL with its backends, RabbitMQ, this
   script) and of the machine; the event worker's messages against the runs of the
   event step they caused; PostgreSQL's ``deadlock detected`` count; steps taken over
   only once a lease ran out (``step.resumed``); and lost wakes: event jobs still
   waiting ``GRACE`` s after their last child ended, which would wait until their
   7-day timeout, left out of the time and counted as infinite latencies.
2. Wake latency: for each event job, from the ``finished_at`` of its last process (the
   end that must wake it) to the first claim of its waiting step (``waiting`` ->
   ``running``, kept by the trigger described in ``bench/events_stack.py``) at or after
   it; an event whose step took that end in while already running is counted apart.
   Shown for the fan-out (each half's events recorded at once, so wakes queue behind
   the event messages still waiting) and for ``--paced`` events recorded ``--rate`` a
   second, the figure with a target.
3. Callback wake: ``--remote`` events on A, one a second, each matching one
   subscription ``run: {service: peer, kind: bench_noop4}``: A's ``remote_job`` submits
   to B's portal over HTTP asking for a completion webhook to A's portal, which B's
   ``job_notification`` (B's email queue) posts signed with B's
   ``PRODINF_WEBHOOK_SECRET``, known to A through the service's ``secret_env``. A polls
   B every 300 s, so only the callback wakes it in time. From B's job ``finished_at``
   to the claim of A's waiting ``wait`` step; the ``due_at`` the claim found (set when
   A's portal took the callback) splits it in two.

Results go to stdout, the last line ``ratio=<fan-out ratio>``; progress to stderr.
"""

from __future__ import annotations

# isort: off
import benchpath  # noqa: F401  (first: it keeps this folder from shadowing the standard library)
# isort: on

import argparse
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.events_stack import Cpu, Deployment
from bench.recovery import PrivatePostgres, PrivateRabbit, free_port, signals_interrupt, wait_ready
from prodinf.config import Settings
from prodinf.kinds.event_record import record_event
from prodinf.status import TERMINAL, JobStatus
from prodinf.store.models import JOBS, STEPS

KIND, PLUGIN = "bench_noop4", "bench.kinds"
SECRET_ENV = "BENCH_PEER_SECRET"
POLL = 300  # seconds between A's looks at B's job: far longer than any callback may take
#: A job still waiting this long after what it waits for ended was not woken: lost.
GRACE = 15.0
LEASE = Settings.model_fields["lease_seconds"].default
T0 = time.time()

SUBSCRIPTIONS = f"""
subscriptions:
  - {{name: one, on: [bench.fanout], run: {{kind: {KIND}}}}}
  - {{name: two, on: [bench.fanout], run: {{kind: {KIND}}}}}
  - {{name: three, on: [bench.fanout], run: {{kind: {KIND}}}}}
  - {{name: peer, on: [bench.remote], run: {{service: peer, kind: {KIND}}}}}
"""


def say(message: str) -> None:
    print(f"[+{time.time() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def spread(values: list[float]) -> str:
    most = max(values, default=math.nan)
    return f"p50={pct(values, 0.5):.3f} s p99={pct(values, 0.99):.3f} s max={most:.3f} s"


def _end(jobs: list[Any]) -> float:
    bad = [j for j in jobs if j.status != JobStatus.SUCCEEDED]
    if bad:
        raise RuntimeError(f"{len(bad)} job(s) did not succeed, e.g. {bad[0].kind} {bad[0].error}")
    return float(max(j.finished_at.timestamp() for j in jobs))


def record(a: Deployment, kind: str) -> None:
    document = {"type": kind, "source": "bench"}
    record_event(a.rt.store, a.rt.registry, a.settings, a.rt.publish, document)


def direct(a: Deployment, jobs: int) -> float:
    start = time.time()
    for _ in range(jobs):
        a.rt.jobs.submit(KIND, {})
    a.settle(start, jobs, lambda rows: set())
    return _end(a.jobs(start)) - start


@dataclass
class Fanout:
    """What a run of events came to."""

    took: float  # first event recorded -> last event job ended (of those that ended)
    wakes: list[float]  # per event: its last process's end -> its step claimed again
    seen: int  # events whose step took in the last end while already running
    lost: int  # event jobs never woken after their last child ended
    messages: int  # messages the event worker took
    runs: int  # runs of the event step (first ones, when not started with the event; wakes)
    deadlocks: int  # "deadlock detected" in PostgreSQL's log meanwhile
    resumed: int  # steps taken over only once their lease ran out

    def __add__(self, other: Fanout) -> Fanout:
        return Fanout(*(x + y for x, y in zip(astuple(self), astuple(other), strict=True)))

    def problems(self) -> str:
        said = (
            f"the event worker took {self.messages} messages for {self.runs} runs of the "
            f"event step; {self.deadlocks} store deadlocks; {self.resumed} steps resumed only "
            f"once their {LEASE:.0f} s lease ran out"
        )
        if self.lost:
            said += (f"; LOST WAKES: {self.lost} event jobs still waiting {GRACE:.0f} s after "
                     "their last process ended, left out of the time")  # fmt: skip
        return said


def lost_wakes(rows: list[Any]) -> set[str]:
    """Jobs still waiting although every job they started ended ``GRACE`` s ago."""
    ends: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r.parent_id:
            ends[r.parent_id].append(r.finished_at.timestamp() if r.finished_at else math.inf)
    now = time.time()
    return {
        r.id
        for r in rows
        if r.status not in TERMINAL and ends.get(r.id) and max(ends[r.id]) < now - GRACE
    }


class Counts:
    """What grows in a log file (messages a worker took, PostgreSQL's deadlocks)."""

    def __init__(self, path: Path, needle: str) -> None:
        self.path, self.needle = path, needle
        self.mark = self._count()

    def _count(self) -> int:
        return self.path.read_text(errors="replace").count(self.needle)

    def since(self) -> int:
        now = self._count()
        grown, self.mark = now - self.mark, now
        return grown


def events(a: Deployment, logs: dict[str, Counts], count: int, gap: float = 0.0) -> Fanout:
    """Record ``count`` events (one each ``gap`` seconds) and follow them to their ends."""
    start = time.time()
    for name in logs:
        logs[name].since()
    for i in range(count):
        record(a, "bench.fanout")
        if gap:
            time.sleep(max(0.0, start + (i + 1) * gap - time.time()))
    lost = a.settle(start, 4 * count, lost_wakes)
    jobs = a.jobs(start)
    took = _end([j for j in jobs if j.kind == "event" and j.id not in lost]) - start
    claims = a.wakes("processes")
    wakes, seen = [], 0
    for event in (j for j in jobs if j.kind == "event"):
        last = max(c.finished_at.timestamp() for c in jobs if c.parent_id == event.id)
        after = [moment for moment, _ in claims.get(event.id, []) if moment >= last]
        if after:
            wakes.append(after[0] - last)
        elif event.id in lost:
            wakes.append(math.inf)
        else:  # the parent's step was running as its last process ended, and saw it
            seen += 1
    runs = a.first_runs(start, "processes") + sum(
        len(claims.get(j.id, [])) for j in jobs if j.kind == "event"
    )
    return Fanout(took, wakes, seen, len(lost), logs["messages"].since(), runs,
                  logs["deadlocks"].since(), a.resumed(start))  # fmt: skip


def remote(a: Deployment, b: Deployment, count: int) -> tuple[list[tuple[float, float]], int]:
    """Per remote job (B's end -> A's claim of ``wait``, B's end -> A's portal took the
    callback), and how many were over before A's first look."""
    start = time.time()
    for _ in range(count):
        record(a, "bench.remote")
        time.sleep(1.0)
    b.settle(start, 2 * count, lambda rows: set())  # each job and its job_notification
    theirs = {j.id: j.finished_at.timestamp() for j in b.jobs(start, JOBS.c.kind == KIND)}

    def sent(ids: list[str]) -> dict[str, str]:
        query = select(STEPS.c.job_id, STEPS.c.output).where(
            STEPS.c.job_id.in_(ids), STEPS.c.name == "submit"
        )
        with a.engine.connect() as conn:
            return {job_id: out["remote_id"] for job_id, out in conn.execute(query).all() if out}

    def lost_callbacks(rows: list[Any]) -> set[str]:
        waiting = [r.id for r in rows if r.kind == "remote_job" and r.status not in TERMINAL]
        now = time.time()
        return {i for i, r in sent(waiting).items() if theirs.get(r, now) < now - GRACE}

    lost = a.settle(start, 2 * count, lost_callbacks)
    ours = [j.id for j in a.jobs(start, JOBS.c.kind == "remote_job")]
    claims, found, early = a.wakes("wait"), [], 0
    for job_id, remote_id in sent(ours).items():
        ended = theirs[remote_id]
        after = [(moment, due) for moment, due in claims.get(job_id, []) if moment >= ended]
        if after:
            moment, due = after[0]
            found.append((moment - ended, due - ended))
        elif job_id in lost:
            found.append((math.inf, math.inf))
        else:
            early += 1
    return found, early


def run(args: argparse.Namespace, work: Path, servers: list[Any]) -> None:
    pg, rabbit = PrivatePostgres(work), PrivateRabbit(work)
    servers.append(pg)
    pg.start()
    servers.append(rabbit)
    rabbit.start()
    rabbit.ctl("add_vhost", "peer")
    rabbit.ctl("set_permissions", "-p", "peer", "guest", ".*", ".*", ".*")
    say(f"private PostgreSQL on :{pg.port} and RabbitMQ {rabbit.node} on :{rabbit.port} up")
    secret = secrets.token_hex(16)
    os.environ[SECRET_ENV] = secret  # A's portal and workers check B's callbacks with it
    a_port, b_port = free_port(), free_port()
    (work / "subscriptions.yaml").write_text(SUBSCRIPTIONS)
    (work / "services.yaml").write_text(
        "services:\n"
        f"  - {{name: peer, type: prodinf, url: 'http://127.0.0.1:{b_port}', "
        f"secret_env: {SECRET_ENV}, poll_interval: {POLL}, deadline: 900}}\n"
    )
    a = Deployment(
        "a", work, pg, rabbit.url, plugins=PLUGIN,
        subscriptions=str(work / "subscriptions.yaml"), services=str(work / "services.yaml"),
        public_url=f"http://127.0.0.1:{a_port}",
    )  # fmt: skip
    servers.append(a)
    b_broker = rabbit.url.rstrip("/") + "/peer"
    b = Deployment("b", work, pg, b_broker, plugins=PLUGIN, webhook_secret=secret)
    servers.append(b)
    event_worker, jobs_worker = a.worker("event", "prodinf.event_tasks"), a.worker("jobs")
    for child in (event_worker, jobs_worker):
        wait_ready(child)
    time.sleep(2)  # the pools' processes start after "ready"
    say("A: an event worker and a jobs worker ready (-c 2 prefork each)")
    cpu = Cpu({
        "event worker": event_worker.proc.pid,
        "jobs worker": jobs_worker.proc.pid,
        "postgres": int((pg.data / "postmaster.pid").read_text().split()[0]),
        "rabbitmq": int((rabbit.dir / "pid").read_text().split()[0]),
    })  # fmt: skip
    logs = {"messages": Counts(event_worker.log, "] received"),
            "deadlocks": Counts(pg.dir / "log", "deadlock detected")}  # fmt: skip

    n = args.events // args.rounds
    direct_s, fan = 0.0, Fanout(0.0, [], 0, 0, 0, 0, 0, 0)
    for r in range(args.rounds):
        for half in ("direct", "events") if r % 2 == 0 else ("events", "direct"):
            before, began = cpu.read(), time.time()
            if half == "direct":
                took = direct(a, 3 * n)
                direct_s += took
                say(f"round {r + 1}: {3 * n} direct jobs in {took:.1f} s")
            else:
                got = events(a, logs, n)
                fan += got
                say(f"round {r + 1}: {n} events x 3 in {got.took:.1f} s; {got.problems()}")
            cpu.add(half, before, time.time() - began)
    total = n * args.rounds
    print(
        f"fanout direct: {3 * total} jobs in {direct_s:.1f} s ({3 * total / direct_s:.1f} jobs/s)"
    )
    print(
        f"fanout events: {total} events x 3 in {fan.took:.1f} s ({3 * total / fan.took:.1f} "
        f"processes/s, {4 * total / fan.took:.1f} jobs/s with the event jobs); {fan.problems()}"
    )
    print(cpu.line("direct"))
    print(cpu.line("events"))
    print(
        f"wake in the fan-out ({n} events recorded at once): {spread(fan.wakes)} "
        f"(n={len(fan.wakes)}; {fan.seen} more whose running step took the last end in)"
    )

    paced = events(a, logs, args.paced, gap=1 / args.rate)
    say(f"{args.paced} paced events in {paced.took:.1f} s")
    print(
        f"wake: {spread(paced.wakes)} (n={len(paced.wakes)}; {args.paced} events at "
        f"{args.rate:g}/s; {paced.seen} more whose running step took the last end in; "
        f"{paced.problems()})"
    )

    a.portal(a_port)
    b.portal(b_port)
    wait_ready(b.worker("jobs,email"))
    time.sleep(2)
    say(f"A's portal on {a.base}; B's on {b.base} with a jobs+email worker")
    found, early = remote(a, b, args.remote)
    never = sum(1 for w, _ in found if w == math.inf)
    print(
        f"callback wake: {spread([w for w, _ in found])} (n={len(found)}; {early} more over "
        f"at A's first look; {never} never woken)"
    )
    if found:
        print(f"    B's end -> A's portal took the callback: {spread([c for _, c in found])}")
        print(f"    callback taken -> A's step claimed: {spread([w - c for w, c in found])}")
    print(f"ratio={direct_s / fan.took:.2f}", flush=True)


def teardown(servers: list[Any]) -> None:
    closing: dict[type, Callable[[Any], None]] = {
        Deployment: lambda d: d.close(),
        PrivateRabbit: lambda r: r.close(),
        PrivatePostgres: lambda p: p.stop("immediate") if p.running else None,
    }
    for server in reversed(servers):
        try:
            closing[type(server)](server)
        except Exception as exc:  # keep tearing down
            say(f"teardown of {type(server).__name__} failed: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200, help="fan-out events in all")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of direct/events halves")
    parser.add_argument("--paced", type=int, default=60, help="paced events for wake latency")
    parser.add_argument("--rate", type=float, default=3.0, help="paced events per second")
    parser.add_argument("--remote", type=int, default=30, help="events run on the peer")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and its logs")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the private servers are started as postgres and rabbitmq")
    for name in [k for k in os.environ if k.startswith("PRODINF_")]:
        del os.environ[name]
    work = Path(tempfile.mkdtemp(prefix="prodinf-events-"))
    work.chmod(0o755)  # postgres and rabbitmq work in folders under it
    (work / "logs").mkdir()
    servers: list[Any] = []
    code = 1
    with signals_interrupt():
        try:
            run(args, work, servers)
            code = 0
        except KeyboardInterrupt:
            say("interrupted; cleaning up")
        finally:
            teardown(servers)
            if args.keep:
                say(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
