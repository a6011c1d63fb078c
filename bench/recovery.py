"""Recovery after faults on RabbitMQ + PostgreSQL: how soon jobs move again, and that none is lost.

    python bench/recovery.py [--jobs 600] [--queue-type classic|quorum] [--rounds 1]
                             [--rate JOBS/ROUNDS/170] [--outage 12] [--status-delay 0]
                             [--seed 1] [--keep]

A chaos run, bounded at 10 minutes. It starts its OWN PostgreSQL 15 cluster and its
OWN RabbitMQ node on spare ports in a temp dir (the machine's shared servers on 5432
and 5672 are never touched), an SMTP server (aiosmtpd) and an HTTP server on
loopback in this process, then prodinf as it runs in production: a portal
(``python -m prodinf.cli portal``), two Celery workers on the jobs queue and one on
the email queue (``celery -A prodinf.worker worker -c 2 -P prefork``), each in its
own process group. Settings: lease 30 s, reconcile interval 2 s, the given queue type.

``--jobs`` jobs are posted to ``/api/v1/jobs`` at ``--rate`` per second by four
submitter threads, each with an idempotency key: half ``http_get`` (a third of them
on ``/slow``, which answers after 2 s, so kills catch steps mid-run), a quarter
``wait_for_url`` and a quarter ``email_when_complete`` on a ``/status/<n>`` URL that
turns ``done`` 3-20 s after submission (both look every second); a third of all jobs
ask for a notification mail (``notify``). A 503 or no answer is retried with the
same key after a short sleep, for ever; 2xx means acknowledged.

The faults, one after the other so each one's recovery is measured on its own (a
round takes 170 s: kills from 10 s to 40 s after the first submission, the portal at
80 s, the broker at 95 s, the store 35 s after the broker is back; ``--rounds 2``
runs them all twice, and the submissions are spread over the rounds):

1. worker kills: for ~30 s, every 3-6 s, the jobs worker holding the most running
   steps is SIGKILLed with its pool (``os.killpg``); a new one is started 1 s later.
   Affected: the jobs with a step still held, right after the kill, under a lease
   whose owner (``host:pid:rand``) is a pid of the killed process group. Moved
   again: the job's first history entry after the kill (``step.resumed``, as another
   worker takes the step once the dead lease runs out) or its end. Measured from
   the kill itself, so it includes the lease (30 s) the dead worker still holds.
   Also affected: the ``email_when_complete`` jobs waiting on a URL watch that the
   killed worker's reconciler had claimed for a look (a claim still in place 2.5 s
   after the kill), if their URL turned done before the claim runs out; measured
   from the kill or from the URL turning done, whichever is later.
2. portal kill: the portal is SIGKILLed while a submission is in flight, and started
   again 1.5 s later. Affected: the submissions in flight at the kill. Moved again:
   the job's first ``step.started`` (or its end), measured from the client's
   acknowledged retry (0 if the job had started before).
3. broker down ``--outage`` s (``rabbitmqctl stop_app`` ... ``start_app``), then
4. store down ``--outage`` s (``pg_ctl stop -m fast`` ... ``start``).
   Affected: the jobs not over at the fault's end that were due by then: queued,
   or a step running (unless held by a killed worker whose lease outlasts the
   fault), or a step waiting with ``due_at`` at or before the fault's end, or an
   ``email_when_complete`` whose URL turned ``done`` by then. A job only waiting
   for a later moment is not affected. For the broker the jobs are read just before
   ``start_app``, for the store just before ``pg_ctl stop``; rows read then that are
   gone at the end (a submission answered 503 removes its job) or jobs that ended
   before the fault did are left out. Moved again: the job's first history entry,
   change of ``updated_at`` (sampled every 0.5 s) or end after the fault's end,
   which is when ``start_app`` / ``pg_ctl start -w`` returned.

For each fault it prints the affected jobs and the max and p99 of their recovery
times. At the end it waits (bounded) until every acknowledged job is over and its
mails are in, and prints: jobs acknowledged, stored, finished ok, lost
(acknowledged but not stored or not over: must be 0), HTTP 500 answers (must be
0), mails expected vs received and duplicated (one Message-ID received twice), and
last ``recovery_p99=<seconds>``: the p99 over every affected job of every fault
(``inf`` if a job never moved). Target: lease + 5 s = 35 s.

Runs as root (``runuser`` starts the servers as ``postgres`` and ``rabbitmq``).
Everything is removed at exit, Ctrl-C included; ``--keep`` keeps the temp dir and
its logs.
"""

from __future__ import annotations

# isort: off
import benchpath  # first: it keeps this folder from shadowing the standard library
# isort: on

import argparse
import email
import json
import math
import os
import random
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine, make_url

from prodinf.status import HELD, TERMINAL
from prodinf.store.models import HISTORY, JOBS, STEPS, WATCHERS, WATCHES

ROOT = benchpath.ROOT
PG_BIN = Path("/usr/lib/postgresql/15/bin")
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
LEASE = 30.0
#: The run must end within this many seconds of its start, teardown included.
BUDGET = 570.0
#: Seconds one round of faults takes: kills from 10 s to 40 s, the portal at 80 s, the
#: broker at 95 s, the store 35 s after the broker is back (each recovered before the next).
ROUND = 170.0

T0 = time.time()


def say(message: str) -> None:
    print(f"[+{time.time() - T0:6.1f}s] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def epoch(moment: Any) -> float | None:
    return None if moment is None else float(moment.timestamp())


# -- private servers ------------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL 15 cluster of our own, run as ``postgres`` from a temp dir."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "postgres"
        self.dir.mkdir()
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/prodinf_bench"
        self.running = False

    def _run(self, *args: str, timeout: float = 90) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        if not self.data.exists():
            self._run(str(PG_BIN / "initdb"), "-A", "trust", "-U", "postgres", "--no-sync",
                      "-D", str(self.data))  # fmt: skip
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        )
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
                  "-o", options, "-w", "-t", "60", "start")  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60",
                  "stop")  # fmt: skip
        self.running = False

    def create_database(self) -> None:
        parsed = make_url(self.url)
        engine = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
        engine.dispose()


class PrivateRabbit:
    """A RabbitMQ node of our own (``bench<hex>@localhost``), run as ``rabbitmq``.

    Its own config (one listener on 127.0.0.1, no plugins), env file and Erlang
    cookie, so nothing of the machine's node in /etc/rabbitmq applies to it.
    """

    def __init__(self, root: Path) -> None:
        self.dir = root / "rabbitmq"
        self.dir.mkdir()
        self.port = free_port()
        self.node = f"bench{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")
        cookie = self.dir / ".erlang.cookie"
        cookie.write_text("".join(secrets.choice(string.ascii_uppercase) for _ in range(20)))
        cookie.chmod(0o400)
        for path in [self.dir, *self.dir.iterdir()]:
            shutil.chown(path, "rabbitmq", "rabbitmq")
        self.env = {
            "HOME": str(self.dir),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        self.started = False

    def _run(
        self, script: str, *args: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = [f"{k}={v}" for k, v in self.env.items()]
        return subprocess.run(
            ["runuser", "-u", "rabbitmq", "--", "env", *env, str(RABBIT_BIN / script), *args],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ctl(self, *args: str, timeout: float = 120) -> None:
        done = self._run("rabbitmqctl", "-n", self.node, *args, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {args[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        done = self._run("rabbitmq-server", "-detached")
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmq-server failed: {done.stdout}{done.stderr}")
        self.started = True
        deadline = time.monotonic() + 120
        while True:  # await_startup fails until the node has registered with epmd
            done = self._run("rabbitmqctl", "-n", self.node, "await_startup", timeout=120)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ node did not start: {done.stdout}{done.stderr}")
            time.sleep(1)

    def close(self) -> None:
        if not self.started:
            return
        self.started = False
        pid_file = self.dir / "pid"
        try:
            self.ctl("stop", str(pid_file), timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            say(f"rabbitmqctl stop failed ({exc}); killing the node")
            with suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


# -- servers in this process --------------------------------------------------------------


class Inbox:
    """aiosmtpd handler: every mail accepted, as (time, Message-ID, X-Prodinf-Job)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mails: list[tuple[float, str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        with self.lock:
            self.mails.append(
                (time.time(), str(message["Message-ID"]), str(message["X-Prodinf-Job"]))
            )
        return "250 Message accepted for delivery"

    def snapshot(self) -> list[tuple[float, str, str]]:
        with self.lock:
            return list(self.mails)


class Loopback:
    """``/payload``, ``/slow`` (2 s), ``/status/<n>`` (running until ``done_at[n]``)."""

    def __init__(self, status_delay: float = 0.0) -> None:
        self.done_at: dict[int, float] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/payload":
                    self._answer(200, b"x" * 65536, "application/octet-stream")
                elif path == "/slow":
                    time.sleep(2)
                    self._answer(200, b"slow but sure", "text/plain")
                elif path.startswith("/status/") and path[8:].isdigit():
                    time.sleep(status_delay)
                    done = time.time() >= outer.done_at.get(int(path[8:]), math.inf)
                    body = {"status": "done", "rows": 42} if done else {"status": "running"}
                    self._answer(200, json.dumps(body).encode(), "application/json")
                else:
                    self._answer(404, b"not found", "text/plain")

            def _answer(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a worker killed mid-request hangs up on us: that is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def done_time(self, url: str | None) -> float:
        """When a ``/status/<n>`` URL turns ``done`` (infinity for any other URL)."""
        n = (url or "").rsplit("/status/", 1)[-1]
        return self.done_at.get(int(n), math.inf) if n.isdigit() else math.inf

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- prodinf's processes -------------------------------------------------------------------


def group_pids(pgid: int) -> set[int]:
    """Every live process in process group ``pgid`` (read from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            found.add(int(entry))
    return found


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.time)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> set[int]:
        """SIGKILL the child's whole process group; return the pids it had."""
        pids = group_pids(self.proc.pid) | {self.proc.pid}
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return pids


class Processes:
    """The portal and workers, each started in its own session, all killed at exit."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.children: list[Child] = []
        self.serial = Counter[str]()

    def start(self, name: str, args: list[str]) -> Child:
        self.serial[name] += 1
        label = f"{name}-{self.serial[name]}"
        log = self.logs / f"{label}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        child = Child(label, proc, log)
        self.children.append(child)
        return child

    def worker(self, queue: str) -> Child:
        label = f"{queue}-{self.serial[queue] + 1}"
        return self.start(
            queue,
            ["-m", "celery", "-A", "prodinf.worker", "worker", "-Q", queue, "-c", "2",
             "-P", "prefork", "-l", "info", "--without-gossip", "--without-mingle",
             "-n", f"{label}@%h"],
        )  # fmt: skip

    def portal(self, port: int) -> Child:
        return self.start("portal", ["-m", "prodinf.cli", "portal", "--port", str(port)])

    def stop_all(self) -> None:
        live = [c for c in self.children if c.alive()]
        for child in live:
            with suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in live:
            with suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for child in self.children:  # pool children may outlive their main process
            for pid in group_pids(child.proc.pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if child.alive():
                child.proc.kill()
                child.proc.wait()


def wait_ready(child: Child, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while b" ready." not in child.log.read_bytes():
        if not child.alive() or time.monotonic() > deadline:
            tail = child.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{child.name} did not start:\n{tail}")
        time.sleep(0.2)


def wait_health(base: str, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{base}/health", timeout=2).status_code == 200:
                return time.time()
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the portal at {base} did not become healthy")
        time.sleep(0.1)


# -- submitting ----------------------------------------------------------------------------


@dataclass
class Submission:
    key: str
    kind: str
    params: dict[str, Any]
    notify: bool
    planned: float  # seconds after the submissions start
    acked_at: float | None = None
    job_id: str | None = None
    answers: list[int | str] = field(default_factory=list)
    refused: str | None = None


class Submitters:
    """Threads posting submissions at their planned moments; retry with the key until 2xx."""

    def __init__(self, base: str, subs: list[Submission], threads: int = 4) -> None:
        self.base = base
        self.subs = subs
        self.lock = threading.Lock()
        #: key -> when its current POST went out, while it is in flight.
        self.in_flight: dict[str, float] = {}
        self.codes = Counter[int | str]()
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.next = 0
        self.start_at = 0.0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        self.start_at = time.time()
        for t in self.threads:
            t.start()

    def done(self) -> bool:
        return not any(t.is_alive() for t in self.threads)

    def _take(self) -> Submission | None:
        with self.lock:
            if self.next >= len(self.subs):
                return None
            sub = self.subs[self.next]
            self.next += 1
            return sub

    def _run(self) -> None:
        while not self.stop.is_set():
            sub = self._take()
            if sub is None:
                return
            delay = self.start_at + sub.planned - time.time()
            if delay > 0 and self.stop.wait(delay):
                return
            self._submit(sub)

    def _submit(self, sub: Submission) -> None:
        body: dict[str, Any] = {"kind": sub.kind, "params": sub.params, "idempotency_key": sub.key}
        if sub.notify:
            body["notify"] = {"email": [f"notify-{sub.key}@example.org"]}
        while not self.stop.is_set():
            with self.lock:
                self.in_flight[sub.key] = time.time()
            code: int | str
            try:
                answer = requests.post(f"{self.base}/api/v1/jobs", json=body, timeout=30)
                code = answer.status_code
            except requests.RequestException as exc:
                answer, code = None, f"no answer ({type(exc).__name__})"
            finally:
                with self.lock:
                    self.in_flight.pop(sub.key, None)
            sub.answers.append(code)
            with self.lock:
                self.codes[code if isinstance(code, int) else "no answer"] += 1
            if answer is not None and code in (200, 201):
                sub.job_id = answer.json()["id"]
                sub.acked_at = time.time()
                return
            if answer is not None and code == 500:
                with self.lock:
                    self.errors.append(f"POST {sub.key}: 500 {answer.text[:300]}")
                self.stop.wait(1.0)
            elif answer is not None and code == 503:
                retry_after = float(answer.headers.get("Retry-After") or 1)
                self.stop.wait(min(retry_after, 1.0))
            elif answer is not None and code != 429:
                sub.refused = f"{code} {answer.text[:300]}"
                with self.lock:
                    self.errors.append(f"POST {sub.key}: {sub.refused}")
                return
            else:
                self.stop.wait(0.5)


class Reader(threading.Thread):
    """Reads an acknowledged job through the API four times a second; counts the answers."""

    def __init__(self, base: str, subs: list[Submission]) -> None:
        super().__init__(daemon=True)
        self.base, self.subs = base, subs
        self.codes = Counter[int | str]()
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        while not self.stop.wait(0.25):
            acked = [s.job_id for s in self.subs if s.job_id] or None
            if acked is None:
                continue
            job_id = rng.choice(acked)
            try:
                answer = requests.get(f"{self.base}/api/v1/jobs/{job_id}", timeout=10)
                self.codes[answer.status_code] += 1
                if answer.status_code == 500:
                    self.errors.append(f"GET {job_id}: 500 {answer.text[:300]}")
            except requests.RequestException:
                self.codes["no answer"] += 1


def plan(jobs: int, rate: float, loopback: Loopback, tag: str, seed: int) -> list[Submission]:
    rng = random.Random(seed)
    subs = []
    for i in range(jobs):
        planned = i / rate
        draw = rng.random()
        key = f"recovery-{tag}-{i}"
        params: dict[str, Any]
        if draw < 0.5:
            path = "/slow" if rng.random() < 1 / 3 else "/payload"
            kind, params = "http_get", {"url": loopback.base + path}
        else:
            loopback.done_at[i] = time.time() + planned + rng.uniform(3, 20)
            url = f"{loopback.base}/status/{i}"
            if draw < 0.75:
                kind, params = "wait_for_url", {"url": url, "interval": 1}
            else:
                kind = "email_when_complete"
                params = {"url": url, "address": f"mail-{i}@example.org", "interval": 1}
        subs.append(Submission(key, kind, params, rng.random() < 1 / 3, planned))
    return subs


# -- watching the store --------------------------------------------------------------------


class Observer(threading.Thread):
    """Samples every job's ``updated_at`` twice a second (a job's moves leave no history
    when a wait is merely renewed, e.g. ``wait_for_url`` looking again)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.lock = threading.Lock()
        self.seen: dict[str, set[float]] = defaultdict(set)
        self.stop = threading.Event()

    def run(self) -> None:
        query = select(JOBS.c.id, JOBS.c.updated_at)
        while not self.stop.wait(0.5):
            try:
                with self.engine.connect() as conn:
                    rows = conn.execute(query).all()
            except Exception:  # the store is down: that is the point of the bench
                continue
            with self.lock:
                for job_id, updated in rows:
                    self.seen[job_id].add(updated.timestamp())

    def moves(self, job_id: str) -> list[float]:
        with self.lock:
            return sorted(self.seen.get(job_id, ()))


@dataclass
class Fault:
    """One fault: each affected job and the moment its recovery is measured from."""

    name: str
    start: float
    end: float
    #: job id -> the moment its recovery is measured from.
    affected: dict[str, float]
    #: "history": first history entry after; "any": also updated_at; "started": first start.
    moved: str
    note: str = ""
    #: Of ``affected``, the jobs held up by a URL watch (not a step lease).
    watched: set[str] = field(default_factory=set)


def held_steps(engine: Engine) -> list[tuple[str, str, str, float]]:
    """(job id, step, lease owner, lease until) of every step held under a lease."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(STEPS.c.job_id, STEPS.c.name, STEPS.c.lease_owner, STEPS.c.lease_until).where(
                STEPS.c.status.in_([str(s) for s in HELD]), STEPS.c.lease_owner.is_not(None)
            )
        ).all()
    return [(j, n, o, u.timestamp()) for j, n, o, u in rows]


def owner_pid(owner: str) -> int | None:
    parts = owner.split(":")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


@dataclass
class Pending:
    """A job not over, as read at a fault: what would make it due."""

    status: str
    kind: str
    url: str | None
    steps: list[tuple[str, float | None, str | None, float | None]]  # status, due, owner, until
    watch: int | None = None


def read_pending(engine: Engine) -> dict[str, Pending]:
    with engine.connect() as conn:
        jobs = conn.execute(
            select(JOBS.c.id, JOBS.c.status, JOBS.c.kind, JOBS.c.params).where(
                JOBS.c.status.not_in([str(s) for s in TERMINAL])
            )
        ).all()
        steps = conn.execute(
            select(
                STEPS.c.job_id,
                STEPS.c.status,
                STEPS.c.due_at,
                STEPS.c.lease_owner,
                STEPS.c.lease_until,
            ).where(STEPS.c.job_id.in_([j.id for j in jobs]))
        ).all()
        watchers = conn.execute(
            select(WATCHERS.c.job_id, WATCHERS.c.watch_id).where(
                WATCHERS.c.job_id.in_([j.id for j in jobs])
            )
        ).all()
    pending = {j.id: Pending(j.status, j.kind, (j.params or {}).get("url"), []) for j in jobs}
    for job_id, status, due, owner, until in steps:
        pending[job_id].steps.append((status, epoch(due), owner, epoch(until)))
    for job_id, watch_id in watchers:
        pending[job_id].watch = watch_id
    return pending


def claimed_watches(engine: Engine) -> dict[int, float]:
    """Watches claimed for a look right now (id -> when the claim runs out).

    A reconciler claims a watch for ``CLAIM_SECONDS`` (120 s) and gives it back,
    due again in ``interval``, once it has looked: a claim further out than a minute
    is a look in progress, or one whose process died.
    """
    with engine.connect() as conn:
        rows = conn.execute(select(WATCHES.c.id, WATCHES.c.next_look_at)).all()
    soon = time.time() + 60
    return {i: at.timestamp() for i, at in rows if at.timestamp() > soon}


def due_by(
    job: Pending, end: float, dead: set[int], dead_watches: dict[int, float], loopback: Loopback
) -> bool:
    """Whether ``job`` had to move by ``end``: see the module's docstring."""
    if job.status == "queued":
        return True
    for status, due, owner, until in job.steps:
        if status in HELD:
            pid = owner_pid(owner or "")
            if not (pid in dead and until is not None and until > end):
                return True
        elif (status == "waiting" and due is not None and due <= end) or (
            status == "pending" and job.status == "running"
        ):
            return True
    if job.kind == "email_when_complete" and loopback.done_time(job.url) <= end:
        # unless its watch is claimed by a killed worker past the end: that fault's
        return not (job.watch in dead_watches and dead_watches[job.watch] > end)
    return False


# -- the run -------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir()
        self.pg = PrivatePostgres(work)
        self.rabbit = PrivateRabbit(work)
        self.smtp_port = free_port()
        self.smtp = Controller(Inbox(), hostname="127.0.0.1", port=self.smtp_port)
        self.inbox: Inbox = self.smtp.handler
        self.loopback = Loopback(args.status_delay)
        self.portal_port = free_port()
        self.base = f"http://127.0.0.1:{self.portal_port}"
        self.procs: Processes | None = None
        self.engine: Engine | None = None
        self.portal: Child | None = None
        self.jobs_workers: list[Child] = []
        self.dead_pids: set[int] = set()
        #: Watches a killed worker had claimed -> when the claim runs out.
        self.dead_watches: dict[int, float] = {}
        self.faults: list[Fault] = []
        self.smtp_started = False

    # -- setup and teardown -----------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRODINF_")}
        env.update(
            PRODINF_HOME=str(self.work / "home"),
            PRODINF_DATABASE_URL=self.pg.url,
            PRODINF_BROKER_URL=self.rabbit.url,
            PRODINF_LEASE_SECONDS=str(LEASE),
            PRODINF_RECONCILE_INTERVAL="2",
            PRODINF_SMTP_HOST="127.0.0.1",
            PRODINF_SMTP_PORT=str(self.smtp_port),
            PRODINF_QUEUE_TYPE=self.args.queue_type,
            PRODINF_LOG_LEVEL="INFO",
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
        )
        return env

    def setup(self) -> None:
        self.pg.start()
        self.pg.create_database()
        say(f"private PostgreSQL 15 up on 127.0.0.1:{self.pg.port} ({self.pg.dir})")
        self.rabbit.start()
        say(f"private RabbitMQ node {self.rabbit.node} up on 127.0.0.1:{self.rabbit.port}")
        self.smtp.start()
        self.smtp_started = True
        env = self.env()
        migrated = subprocess.run(
            [sys.executable, "-m", "prodinf.cli", "db", "upgrade"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if migrated.returncode != 0:
            raise RuntimeError(f"prodinf db upgrade failed: {migrated.stdout}{migrated.stderr}")
        self.engine = create_engine(
            self.pg.url, pool_pre_ping=True, pool_size=3, connect_args={"connect_timeout": 2}
        )
        self.procs = Processes(env, self.logs)
        self.portal = self.procs.portal(self.portal_port)
        self.jobs_workers = [self.procs.worker("jobs") for _ in range(2)]
        email_worker = self.procs.worker("email")
        for child in [*self.jobs_workers, email_worker]:
            wait_ready(child)
        wait_health(self.base)
        say(
            f"portal on {self.base}, 2 jobs workers and 1 email worker ready "
            f"(queue type {self.args.queue_type}, lease {LEASE:.0f}s, reconcile every 2s)"
        )

    def teardown(self) -> None:
        if self.procs is not None:
            self.procs.stop_all()
        if self.engine is not None:
            self.engine.dispose()
        if self.smtp_started:
            self.smtp.stop()
        self.loopback.close()
        self.rabbit.close()
        if self.pg.running:
            try:
                self.pg.stop("immediate")
            except Exception as exc:  # keep tearing down
                say(f"pg_ctl stop failed: {exc}")

    # -- faults -----------------------------------------------------------------------------

    def kill_worker(self, number: int) -> None:
        assert self.procs is not None and self.engine is not None
        # The victim: the live jobs worker holding the most running steps, waiting up
        # to 3 s for one that holds two (its whole pool), so kills catch steps mid-run.
        deadline = time.monotonic() + 3
        while True:
            live = [w for w in self.jobs_workers if w.alive()]
            load = Counter(owner_pid(owner) for _, _, owner, _ in held_steps(self.engine))
            holding = {w.name: sum(load[pid] for pid in group_pids(w.proc.pid)) for w in live}
            victim = max(live, key=lambda w: holding[w.name])
            if holding[victim.name] >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        started = time.time()
        pids = victim.kill()
        self.dead_pids |= pids
        self.jobs_workers.remove(victim)
        claimed = claimed_watches(self.engine)
        affected = {
            job_id: started
            for job_id, _, owner, _ in held_steps(self.engine)
            if owner_pid(owner) in pids
        }
        fault = Fault(f"worker kill #{number}", started, started, affected, "history")
        self.faults.append(fault)
        say(f"fault: SIGKILLed worker {victim.name} (pids {sorted(pids)}): "
            f"{len(affected)} job(s) with a step held by it")  # fmt: skip

        def replace() -> None:
            time.sleep(1)
            assert self.procs is not None
            self.jobs_workers.append(self.procs.worker("jobs"))
            time.sleep(1.5)
            self._stranded_watches(fault, claimed)

        threading.Thread(target=replace, daemon=True).start()

    def _stranded_watches(self, fault: Fault, claimed: dict[int, float]) -> None:
        """Add to ``fault`` the jobs whose URL watch the killed worker's reconciler had
        claimed: a claim that has not moved 2.5 s after the kill is a dead one. Each
        counts from the kill or from its URL turning done, whichever is later, if
        that is before the claim runs out."""
        assert self.engine is not None
        still = claimed_watches(self.engine)
        dead = {
            i: until
            for i, until in claimed.items()
            if still.get(i) == until and i not in self.dead_watches  # not an earlier kill's
        }
        if not dead:
            return
        self.dead_watches.update(dead)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(WATCHERS.c.job_id, WATCHERS.c.watch_id, JOBS.c.params)
                .join(JOBS, JOBS.c.id == WATCHERS.c.job_id)
                .where(WATCHERS.c.watch_id.in_(list(dead)))
            ).all()
        stuck = 0
        for job_id, watch_id, params in rows:
            done = self.loopback.done_time((params or {}).get("url"))
            if done < dead[watch_id]:
                fault.affected[job_id] = max(fault.start, done)
                fault.watched.add(job_id)
                stuck += 1
        say(f"{fault.name}: {len(dead)} URL watch(es) left claimed by the killed worker for "
            f"{max(dead.values()) - fault.start:.0f}s; {stuck} job(s) wait on them")  # fmt: skip

    def kill_portal(self, subs: Submitters) -> None:
        assert self.procs is not None and self.portal is not None
        deadline = time.monotonic() + 20
        in_flight: list[str] = []
        while time.monotonic() < deadline:  # kill while a POST has been on its way 5 ms
            with subs.lock:
                now = time.time()
                in_flight = [k for k, at in subs.in_flight.items() if now - at > 0.005]
                if in_flight:
                    started = time.time()
                    self.portal.kill()
                    break
            time.sleep(0.001)
        else:
            started = time.time()
            self.portal.kill()
        say(f"fault: SIGKILLed the portal with {len(in_flight)} submission(s) in flight")
        time.sleep(1.5)
        self.portal = self.procs.portal(self.portal_port)
        end = wait_health(self.base)
        say(f"portal back after {end - started:.1f}s")
        by_key = {s.key: s for s in subs.subs}
        cut = [by_key[k] for k in in_flight]
        deadline = time.monotonic() + 60
        while any(s.acked_at is None and s.refused is None for s in cut):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        affected = {s.job_id: s.acked_at for s in cut if s.job_id and s.acked_at}
        answers = "; ".join(f"{s.key}: {s.answers}" for s in cut)
        self.faults.append(
            Fault("portal kill", started, end, affected, "started", note=f"answers {answers}")
        )

    def broker_outage(self) -> None:
        assert self.engine is not None
        started = time.time()
        self.rabbit.ctl("stop_app")
        say(f"fault: RabbitMQ stopped (stop_app) for {self.args.outage:.0f}s")
        time.sleep(max(0.0, started + self.args.outage - time.time()))
        pending = read_pending(self.engine)  # the store is up: read just before the end
        self.rabbit.ctl("start_app")
        end = time.time()
        affected = {
            j: end
            for j, job in pending.items()
            if due_by(job, end, self.dead_pids, self.dead_watches, self.loopback)
        }
        self.faults.append(Fault("broker down", started, end, affected, "any"))
        say(f"RabbitMQ back (start_app) after {end - started:.1f}s: {len(affected)} job(s) "
            f"were due by then ({len(pending)} not over)")  # fmt: skip

    def store_outage(self) -> None:
        assert self.engine is not None
        pending = read_pending(self.engine)  # the store is about to go: read it first
        started = time.time()
        self.pg.stop("fast")
        say(f"fault: PostgreSQL stopped (pg_ctl stop -m fast) for {self.args.outage:.0f}s")
        time.sleep(max(0.0, started + self.args.outage - time.time()))
        self.pg.start()
        end = time.time()
        affected = {
            j: end
            for j, job in pending.items()
            if due_by(job, end, self.dead_pids, self.dead_watches, self.loopback)
        }
        self.faults.append(Fault("store down", started, end, affected, "any"))
        say(f"PostgreSQL back (pg_ctl start) after {end - started:.1f}s: {len(affected)} job(s) "
            f"were due by then ({len(pending)} not over at its start)")  # fmt: skip

    # -- the schedule -----------------------------------------------------------------------

    def run(self) -> int:
        args = self.args
        tag = uuid.uuid4().hex[:6]
        subs = plan(args.jobs, args.rate, self.loopback, tag, args.seed)
        submitters = Submitters(self.base, subs)
        reader = Reader(self.base, subs)
        assert self.engine is not None
        observer = Observer(self.engine)
        observer.start()
        submitters.start()
        reader.start()
        t_sub = submitters.start_at
        say(f"submitting {args.jobs} jobs at {args.rate:.2f}/s (~{args.jobs / args.rate:.0f}s)")
        stop_progress = threading.Event()
        threading.Thread(target=self._progress, args=(subs, stop_progress), daemon=True).start()

        def at(offset: float) -> None:
            time.sleep(max(0.0, t_sub + offset - time.time()))

        rng = random.Random(args.seed + 1)
        number = 0
        for round_ in range(args.rounds):
            base = round_ * ROUND
            at(base + 10)
            while time.time() < t_sub + base + 40:
                number += 1
                self.kill_worker(number)
                time.sleep(rng.uniform(3, 6))
            at(base + 80)
            self.kill_portal(submitters)
            at(base + 95)
            self.broker_outage()
            at(base + 95 + args.outage + 35)
            self.store_outage()

        while not submitters.done() and time.time() < T0 + BUDGET - 90:
            time.sleep(0.5)
        if not submitters.done():
            submitters.stop.set()
            say("GAVE UP submitting: the portal did not take every submission in time")
        else:
            say("all submissions answered; waiting for every job and mail to end")
        self._drain(subs)
        stop_progress.set()
        submitters.stop.set()
        reader.stop.set()
        time.sleep(3)  # a late duplicate mail shows up here
        observer.stop.set()
        return self._report(subs, submitters, reader, observer)

    def _progress(self, subs: list[Submission], stop: threading.Event) -> None:
        while not stop.wait(15):
            acked = sum(1 for s in subs if s.acked_at)
            try:
                assert self.engine is not None
                with self.engine.connect() as conn:
                    counts = dict(
                        conn.execute(
                            select(JOBS.c.status, text("count(*)")).group_by(JOBS.c.status)
                        ).all()
                    )
            except Exception:  # the store may be down
                counts = {"store": "down"}
            say(f"progress: {acked}/{len(subs)} acknowledged; jobs {counts}; "
                f"mails {len(self.inbox.snapshot())}")  # fmt: skip

    def _drain(self, subs: list[Submission]) -> None:
        assert self.engine is not None
        deadline = min(time.time() + 180, T0 + BUDGET - 30)
        while time.time() < deadline:
            try:
                with self.engine.connect() as conn:
                    open_jobs = conn.scalar(
                        select(text("count(*)"))
                        .select_from(JOBS)
                        .where(JOBS.c.status.not_in([str(s) for s in TERMINAL]))
                    )
            except Exception:
                open_jobs = -1
            if open_jobs == 0 and self._mails_missing(subs) == 0:
                return
            time.sleep(1)
        say("drain deadline reached with work left (see below)")

    def _mails_missing(self, subs: list[Submission]) -> int:
        return len(self._expected_mails(subs) - self._received_purposes())

    def _expected_mails(self, subs: list[Submission]) -> set[tuple[str, str]]:
        """(job id, purpose) of each mail an acknowledged job should cause."""
        expected = set()
        for s in subs:
            if s.job_id is None:
                continue
            if s.kind == "email_when_complete":
                expected.add((s.job_id, "email_when_complete"))
            if s.notify:
                expected.add((s.job_id, "notification"))
        return expected

    def _received_purposes(self) -> set[tuple[str, str]]:
        return {self._purpose(mid, job) for _, mid, job in self.inbox.snapshot()}

    @staticmethod
    def _purpose(message_id: str, job: str) -> tuple[str, str]:
        # email_when_complete mails as <job.send@prodinf>, a notification as <its job.email@...>
        return (job, "email_when_complete" if ".send@" in message_id else "notification")

    # -- the report -------------------------------------------------------------------------

    def _report(
        self, subs: list[Submission], submitters: Submitters, reader: Reader, observer: Observer
    ) -> int:
        assert self.engine is not None
        with self.engine.connect() as conn:
            jobs = {
                r.id: r
                for r in conn.execute(
                    select(
                        JOBS.c.id, JOBS.c.kind, JOBS.c.status, JOBS.c.idempotency_key,
                        JOBS.c.finished_at, JOBS.c.error,
                    )
                ).all()
            }  # fmt: skip
            history: dict[str, list[tuple[float, str]]] = defaultdict(list)
            for job_id, at, event in conn.execute(
                select(HISTORY.c.job_id, HISTORY.c.at, HISTORY.c.event).order_by(HISTORY.c.at)
            ).all():
                history[job_id].append((at.timestamp(), event))
        observed_until = time.time()

        def recovery(job_id: str, since: float, how: str) -> tuple[float, str] | None:
            """Seconds from ``since`` until the job moved, and what showed it."""
            job = jobs[job_id]
            finished = epoch(job.finished_at)
            moments: list[tuple[float, str]] = []
            if how == "started":
                moments = [(at, ev) for at, ev in history[job_id] if ev == "step.started"][:1]
                moments += [(finished, "job ended")] if finished else []
                return (max(0.0, min(moments)[0] - since), min(moments)[1]) if moments else None
            moments = [(at, ev) for at, ev in history[job_id] if at > since]
            if how == "any":
                moments += [(at, "updated_at") for at in observer.moves(job_id) if at > since]
            if finished is not None and finished > since:
                moments.append((finished, "job ended"))
            if not moments:
                return None
            at, what = min(moments)
            return at - since, what

        def counted(job_id: str, since: float, how: str) -> bool:
            # Rows read at an outage that are gone (a submission refused with 503 removes
            # its row) or jobs that ended before the outage did were not held up by it.
            job = jobs.get(job_id)
            if job is None:
                return False
            finished = epoch(job.finished_at)
            return how != "any" or finished is None or finished > since

        print("== recovery: seconds from the fault's end until each affected job moved again")
        every: list[float] = []
        kills: dict[str, list[float]] = {"a step lease": [], "a URL watch claim": []}
        kill_count = 0
        for fault in self.faults:
            chosen = {j: t for j, t in fault.affected.items() if counted(j, t, fault.moved)}
            dropped = len(fault.affected) - len(chosen)
            found = {j: recovery(j, since, fault.moved) for j, since in chosen.items()}
            times = {j: None if f is None else f[0] for j, f in found.items()}
            stuck = [j for j, t in times.items() if t is None]
            got = [t for t in times.values() if t is not None]
            every += got + [math.inf] * len(stuck)
            if fault.name.startswith("worker kill"):
                kill_count += 1
                for j, t in times.items():
                    cause = "a URL watch claim" if j in fault.watched else "a step lease"
                    kills[cause].append(math.inf if t is None else t)
            span = f"at +{fault.start - T0:.1f}s"
            if fault.end > fault.start:
                span += f", {fault.end - fault.start:.1f}s long"
            figures = (
                f"max {max(got):.1f}, p99 {p99(got + [math.inf] * len(stuck)):.1f}" if got else "-"
            )
            extra = f", NEVER MOVED {len(stuck)}" if stuck else ""
            if dropped:
                extra += f" ({dropped} read then gone or over before the end: not counted)"
            print(f"{fault.name} ({span}): affected {len(times)}{extra}; {figures}")
            if fault.note:
                print(f"    {fault.note}")
            if got:
                slowest = max((f[0], j, f[1]) for j, f in found.items() if f is not None)
                print(f"    slowest: {jobs[slowest[1]].kind} {slowest[1]}, moved again by "
                      f"{slowest[2]} at +{chosen[slowest[1]] + slowest[0] - T0:.1f}s")  # fmt: skip
            for job_id in stuck[:3]:
                job = jobs[job_id]
                last = [(round(at - T0, 1), ev) for at, ev in history[job_id][-4:]]
                print(f"    never moved: {job.kind} {job_id} {job.status}, history {last}")
        for cause, values in kills.items():
            if values:
                print(
                    f"worker kills, all {kill_count}, jobs held up by {cause}: affected "
                    f"{len(values)}; max {max(values):.1f}, p99 {p99(values):.1f}"
                )
        print(f"(observed until +{observed_until - T0:.1f}s)")

        print("== totals")
        acked = [s for s in subs if s.job_id]
        stored = [s for s in acked if s.job_id in jobs]
        ok = [s for s in stored if jobs[s.job_id].status == "succeeded"]
        not_over = [s for s in stored if jobs[s.job_id].status not in TERMINAL]
        failed = [
            s for s in stored
            if jobs[s.job_id].status in TERMINAL and jobs[s.job_id].status != "succeeded"
        ]  # fmt: skip
        lost = (len(acked) - len(stored)) + len(not_over)
        by_key = {r.idempotency_key: r for r in jobs.values() if r.idempotency_key}
        unacked_stored = [s for s in subs if s.job_id is None and s.key in by_key]
        notes = [r for r in jobs.values() if r.kind == "job_notification"]
        print(
            f"jobs: submitted {len(subs)}, acknowledged (2xx) {len(acked)}, stored {len(stored)}, "
            f"finished ok {len(ok)}, failed/other end {len(failed)}, not over {len(not_over)}, "
            f"refused (4xx) {sum(1 for s in subs if s.refused)}, stored but never "
            f"acknowledged {len(unacked_stored)}"
        )
        print(f"jobs lost (acknowledged but not stored or not over): {lost}")
        for s in failed[:5]:
            print(f"    {s.kind} {s.job_id} {jobs[s.job_id].status}: {jobs[s.job_id].error}")
        for s in not_over[:5]:
            print(f"    not over: {s.kind} {s.job_id} {jobs[s.job_id].status}")
        print(
            f"notification jobs: {len(notes)}, over "
            f"{sum(1 for r in notes if r.status in TERMINAL)}, succeeded "
            f"{sum(1 for r in notes if r.status == 'succeeded')}"
        )
        errors = submitters.errors + reader.errors
        http500 = submitters.codes[500] + reader.codes[500]
        print(f"HTTP answers: POST {dict(submitters.codes)}; GET {dict(reader.codes)}")
        print(f"HTTP 500 answers: {http500}")
        for line in errors[:5]:
            print(f"    {line}")
        mails = self.inbox.snapshot()
        ids = Counter(mid for _, mid, _ in mails)
        purposes = Counter(self._purpose(mid, job) for _, mid, job in mails)
        expected = self._expected_mails(subs)
        duplicated = sum(n - 1 for n in ids.values() if n > 1)
        twice = sum(n - 1 for n in purposes.values() if n > 1)
        print(
            f"mails: expected {len(expected)}, received {len(mails)} "
            f"({len(ids)} distinct Message-IDs), missing {len(expected - set(purposes))}, "
            f"duplicated (same Message-ID twice) {duplicated}, more than one for the same "
            f"job and purpose {twice}"
        )
        for mid, n in list((m, n) for m, n in ids.items() if n > 1)[:5]:
            at = [f"+{t - T0:.1f}s" for t, m, _ in mails if m == mid]
            about = next(job for _, m, job in mails if m == mid)
            print(f"    {mid} (about job {about}) received {n} times, at {', '.join(at)}")
        self._log_summary()
        value = p99(every) if every else 0.0
        print(f"recovery_p99={value:.1f}" if value != math.inf else "recovery_p99=inf", flush=True)
        return 0

    def _log_summary(self) -> None:
        """ERROR/CRITICAL lines and tracebacks per child log, the first few of each kind."""
        print("== errors in the logs (faults cause some: connections lost, workers killed)")
        for log in sorted(self.logs.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()
            bad = [ln for ln in lines if " ERROR" in ln or "CRITICAL" in ln or "Traceback" in ln]
            kinds = Counter(_shape(ln) for ln in bad)
            if not kinds:
                continue
            print(f"{log.name}: {len(bad)} line(s)")
            for shape, n in kinds.most_common(4):
                print(f"    {n} x {shape}")


def _shape(line: str) -> str:
    """An error line without its timestamp, pids and ids, to count alike ones together."""
    body = line.split("] ", 1)[-1] if line.startswith("[") else line
    words = [w if not any(c.isdigit() for c in w) else "#" for w in body.split()]
    return " ".join(words)[:160]


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C, through the same cleanup."""

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--queue-type", choices=["classic", "quorum"], default="classic")
    parser.add_argument(
        "--rate", type=float, help="submissions per second (default: spread over the faults)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the four faults")
    parser.add_argument("--outage", type=float, default=12.0, help="seconds broker/store are down")
    parser.add_argument(
        "--status-delay",
        type=float,
        default=0.0,
        help="seconds /status/<n> takes to answer (longer looks: a killed worker is more "
        "likely to die holding URL watches)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and its logs")
    args = parser.parse_args()
    if args.rate is None:
        args.rate = args.jobs / (ROUND * args.rounds)
    if args.rounds * ROUND > 400:
        raise SystemExit("at most 2 rounds fit in the 10 minutes a run may take")
    if os.geteuid() != 0:
        raise SystemExit("run as root: the private servers are started as postgres and rabbitmq")
    work = Path(tempfile.mkdtemp(prefix="prodinf-recovery-"))
    work.chmod(0o755)  # postgres and rabbitmq work in folders under it
    bench = Bench(args, work)
    code = 1
    with signals_interrupt():
        try:
            bench.setup()
            code = bench.run()
        except KeyboardInterrupt:
            say("interrupted; cleaning up")
        finally:
            bench.teardown()
            if args.keep:
                say(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
