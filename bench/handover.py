"""Handovers on RabbitMQ + PostgreSQL + MariaDB with real workers: how soon one stage
hands over to the next, what a handover costs over running its jobs by hand, and how
well the copy cap keeps the staging server busy.

    python bench/handover.py [--small 50] [--bulk 20] [--cap 2] [--genes 45000]
                             [--rounds 4] [--keep]

Runs as root. The job store and the broker are a PostgreSQL 15 cluster and a RabbitMQ
node of its own (``bench/recovery.py``'s, on spare ports in a temp dir; the machine's
shared servers are never touched). The source server is the machine's MariaDB
(``BENCH_MYSQL_URL``, default root on 127.0.0.1:3306), holding databases named
``bho<hex>..._core_115_38`` made for the run; the staging server is a second MariaDB
started for the run (``tests/staging_servers.py``). A prodinf (``bench/events_stack.py``'s
``Deployment``, every setting at its default but those named) runs a worker per queue
(``celery -A prodinf.handover_tasks|prodinf.worker|prodinf.event_tasks|
prodinf.email_tasks worker -Q <queue>``): handover and jobs ``-c 4``, event ``-c 2``,
email ``-c 1``; ``PRODINF_RELEASE=115``, no subscriptions, mail to the outbox folder.

1. Handoff: ``--small`` handovers of small core databases (genes=50), submitted one
   after the other at once with ``Handovers.submit`` (what ``POST /api/v1/handovers``
   calls), stages as the shipped example (healthcheck groups generic, meta, core;
   copy; metadata; events). The copy cap is raised above their number for this part
   (``PRODINF_HANDOVER_MAX_COPIES=1000``) so a copy never waits for a slot: a slot's
   wait is the cap doing its work, not a handoff, and part 3 measures it. At each
   boundary (healthcheck -> copy, copy -> metadata) of each handover: from the ending
   stage's job's ``finished_at`` to the next stage's job's ``created_at`` (its row
   written: the handoff itself) and ``started_at`` (a jobs worker took it: adds the
   jobs queue's wait). Target: p50 <= 0.2 s and p99 <= 1 s on ``created_at``. Split
   in two with the trigger of ``bench/events_stack.py``: the end -> the stage's step
   claimed again (woken), the claim -> the next job's row.
2. A ~1,000,000-row core database (``--genes``, as ``bench/copy.py``): a handover, from
   its submission to its job's ``finished_at``, against the same three jobs run
   directly through the same workers (the params the handover's stage jobs had:
   healthcheck as configured, copy_database with overwrite to the staging server,
   register_metadata of the staging copy), each submitted with ``Runtime.jobs.submit``
   once the one before it ended (looked at every 50 ms), from the first submission to
   the last ``finished_at``. The staging copy is dropped after each run. The machine's
   load drifts (a run takes 15-40 s here), so ``--rounds`` rounds run handover, direct,
   then direct, handover, ...; one untimed healthcheck job reads the source first, so
   the first run does not pay alone for a cache left cold by the build.
   ``ratio = direct time / handover time``, each summed over the rounds (target
   >= 0.9); the time each spent outside its jobs' runs is shown too.
3. Bulk: ``--bulk`` databases (genes=2000) in one ``Handovers.bulk``, on a second
   deployment (its own store database and vhost) whose core type runs only the
   ``copy`` stage, cap ``PRODINF_HANDOVER_MAX_COPIES=2``. ideal = sum of the copy
   jobs' run times (``finished_at - started_at``) / 2; ratio = ideal / (the last
   copy's ``finished_at`` - the bulk's submission); target >= 0.8. The most copy jobs
   running at once (from their timestamps) must be <= 2; a freed slot's handoff (a
   copy's end -> the next waiting handover's copy job created, started) is shown.

The small and bulk databases are copies of one built database each, made inside the
server (``Sources.clone``). Results go to stdout, the last line
``ratio=<part 2's ratio>``; progress to stderr. Every database made on the source is
dropped at the end, the staging server, workers and private servers are stopped and
removed, Ctrl-C included; ``--keep`` keeps the temp dir with the logs.
"""

from __future__ import annotations

# isort: off
import benchpath  # noqa: F401  (first: it keeps this folder from shadowing the standard library)
# isort: on

import argparse
import contextlib
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import prodinf.kinds  # noqa: F401  (registers the kinds, handover among them)
from bench.events import pct, spread
from bench.handover_stack import Sources, Stack, handover_config
from bench.recovery import PrivatePostgres, PrivateRabbit, signals_interrupt
from prodinf.databases.uri import DatabaseURI
from prodinf.kinds.handover.service import Handovers
from prodinf.status import JobStatus
from prodinf.store.models import JOBS
from tests.staging_servers import staging_mariadb

T0 = time.time()
CONTACT, COMMENT = "bench@example.org", "bench/handover.py"
#: The stages of the shipped example (``prodinf/kinds/handover/defaults/handover.yaml``).
ALL_STAGES: dict[str, Any] = {
    "healthcheck": {"params": {"groups": ["generic", "meta", "core"]}},
    "copy": {},
    "metadata": {},
    "events": {},
}
#: The kind of each stage's job, in stage order.
KINDS = ("healthcheck", "copy_database", "register_metadata")
CONCURRENCY = {"handover": 4, "jobs": 4, "event": 2, "email": 1}
P50_TARGET, P99_TARGET = 0.2, 1.0


def say(message: str) -> None:
    print(f"[+{time.time() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def ts(moment: Any) -> float:
    return float(moment.timestamp()) if moment is not None else math.nan


def succeeded(rows: list[Any], what: str) -> None:
    bad = [r for r in rows if r.status != JobStatus.SUCCEEDED]
    if bad:
        raise RuntimeError(f"{len(bad)} {what} did not succeed, e.g. {bad[0].kind}: {bad[0].error}")


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


class Built:
    """The source databases, made in a thread while the servers start."""

    def __init__(self, sources: Sources, small: int, bulk: int, genes: int) -> None:
        self.small: list[DatabaseURI] = []
        self.bulk: list[DatabaseURI] = []
        self.big: DatabaseURI | None = None
        self.rows = {"small": 0, "big": 0, "bulk": 0}
        self.error: BaseException | None = None

        def build() -> None:
            try:
                started = time.monotonic()
                self.small, self.rows["small"] = self._many(sources, "s", small, 50)
                self.bulk, self.rows["bulk"] = self._many(sources, "b", bulk, 2000)
                say(f"{small} small and {bulk} bulk databases in {time.monotonic() - started:.1f}s")
                started = time.monotonic()
                self.big, self.rows["big"] = sources.build("big", genes)
                say(f"{self.rows['big']:,}-row database in {time.monotonic() - started:.1f}s")
            except BaseException as exc:  # reported by join
                self.error = exc

        self.thread = threading.Thread(target=build, daemon=True)
        self.thread.start()

    @staticmethod
    def _many(sources: Sources, prefix: str, count: int, genes: int) -> tuple[list[Any], int]:
        first, rows = sources.build(f"{prefix}00", genes)
        return [first, *(sources.clone(first, f"{prefix}{i:02d}") for i in range(1, count))], rows

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


def handovers(stack: Stack) -> Handovers:
    rt = stack.rt
    return Handovers(rt.store, rt.registry, rt.settings, rt.publish)


# -- 1. handoff ------------------------------------------------------------------------------


def handoff(stack: Stack, small: list[DatabaseURI], rows: int) -> list[str]:
    service = handovers(stack)
    begun = time.time()
    tokens = [
        service.submit({"src_uri": u.secret(), "contact": CONTACT, "comment": COMMENT})["token"]
        for u in small
    ]
    submitted = time.time() - begun
    say(f"{len(tokens)} handovers submitted in {submitted:.1f}s")
    ended = stack.wait_over(tokens, timeout=300)
    succeeded(ended, "handovers")
    children = stack.rows(JOBS.c.parent_id.in_(tokens))
    succeeded(children, "stage jobs")
    claims = stack.claims(tokens)
    by_parent: dict[str, dict[str, Any]] = {}
    for c in children:
        by_parent.setdefault(c.parent_id, {})[c.kind] = c
    created, started, woken, switched, tail = [], [], [], [], []
    for token in tokens:
        jobs = by_parent[token]
        for before, after in pairwise(KINDS):
            end = ts(jobs[before].finished_at)
            created.append(ts(jobs[after].created_at) - end)
            started.append(ts(jobs[after].started_at) - end)
            step = jobs[before].parent_step
            claim = next((m for m in claims.get((token, step), []) if m >= end - 0.05), None)
            if claim is not None:
                woken.append(claim - end)
                switched.append(ts(jobs[after].created_at) - claim)
        tail.append(ts(next(r for r in ended if r.id == token).finished_at)
                    - ts(jobs[KINDS[-1]].finished_at))  # fmt: skip
    last = max(ts(r.finished_at) for r in ended)
    ok = pct(created, 0.5) <= P50_TARGET and pct(created, 0.99) <= P99_TARGET
    return [
        f"handoff: {len(tokens)} handovers of {rows:,}-row core databases (submitted in "
        f"{submitted:.1f}s, all over {last - begun:.1f}s after the first), {len(created)} "
        f"stage boundaries, a stage job's finished_at -> the next stage job's created_at: "
        f"{spread(created)} (target p50<={P50_TARGET} s p99<={P99_TARGET} s: {verdict(ok)})",
        f"    -> the next stage job's started_at: {spread(started)} (adds its wait in the jobs "
        f"queue, behind the other handovers' {3 * len(tokens)} stage jobs on -c "
        f"{CONCURRENCY['jobs']})",
        f"    split: the end -> the stage's step woken (claimed): {spread(woken)}; woken -> "
        f"the next job's row: {spread(switched)} (n={len(woken)})",
        f"    the metadata job's end -> the handover's end (events stage): {spread(tail)}",
    ]


# -- 2. one large handover against its jobs run directly ---------------------------------------


def stage_times(rows: dict[str, Any], start: float) -> str:
    parts, mark = [], start
    for kind in KINDS:
        r = rows[kind]
        run = ts(r.finished_at) - ts(r.started_at)
        gap = ts(r.started_at) - mark
        parts.append(f"{kind} {run:.1f}s (after {gap:.2f}s)")
        mark = ts(r.finished_at)
    return ", ".join(parts)


def in_jobs(rows: dict[str, Any]) -> float:
    """Seconds the stage jobs ran (started_at -> finished_at), summed."""
    return sum(ts(r.finished_at) - ts(r.started_at) for r in rows.values())


@dataclass
class Run:
    """One run of the three jobs: by a handover, or directly."""

    seconds: float  # submission -> the end
    jobs: dict[str, Any]  # kind -> its job's row
    begun: float
    note: str = ""


def by_handover(stack: Stack, big: DatabaseURI, staged: DatabaseURI) -> tuple[Run, dict[str, Any]]:
    """A handover of ``big``; and the params its stage jobs had."""
    begun = time.time()
    raw = {"src_uri": big.secret(), "contact": CONTACT, "comment": COMMENT}
    token = handovers(stack).submit(raw)["token"]
    checked = time.time() - begun
    (done,) = stack.wait_over([token], timeout=600)
    succeeded([done], "handover")
    children = {c.kind: c for c in stack.rows(JOBS.c.parent_id == token)}
    with stack.engine.connect() as conn:
        params = dict(conn.execute(
            JOBS.select().with_only_columns(JOBS.c.kind, JOBS.c.params)
            .where(JOBS.c.parent_id == token)
        ).all())  # fmt: skip
    staged.drop()
    note = (f"the request's checks {checked:.2f}s, events and end "
            f"{ts(done.finished_at) - ts(children[KINDS[-1]].finished_at):.2f}s")  # fmt: skip
    return Run(ts(done.finished_at) - begun, children, begun, note), params


def directly(stack: Stack, params: dict[str, Any], staged: DatabaseURI) -> Run:
    """The three jobs submitted one after the other, each once the one before ended."""
    jobs: dict[str, Any] = {}
    begun = time.time()
    for kind in KINDS:
        summary, _ = stack.rt.jobs.submit(kind, params[kind])
        (jobs[kind],) = stack.wait_over([summary["id"]], timeout=600, poll=0.05)
        succeeded([jobs[kind]], f"direct {kind}")
    staged.drop()
    return Run(ts(jobs[KINDS[-1]].finished_at) - begun, jobs, begun)


def large(
    stack: Stack, big: DatabaseURI, rows: int, staging: str, rounds: int
) -> tuple[float, list[str]]:
    staged = DatabaseURI.parse(f"{staging}/{big.database}")
    # Read the source once, untimed, so the first run does not pay alone for a cache
    # cold from the build (the database is larger than the server's buffer pool).
    warm = time.time()
    summary, _ = stack.rt.jobs.submit(
        "healthcheck", {"database_uri": big.secret(), **ALL_STAGES["healthcheck"]["params"]}
    )
    stack.wait_over([summary["id"]], timeout=300, poll=0.05)
    warm = time.time() - warm
    ours: list[Run] = []
    theirs: list[Run] = []
    params: dict[str, Any] = {}
    for r in range(rounds):  # handover, direct, direct, handover, ...
        for half in ("handover", "direct") if r % 2 == 0 else ("direct", "handover"):
            if half == "handover":
                run, params = by_handover(stack, big, staged)
                ours.append(run)
            else:
                if not params:  # the first round's handover gave them
                    raise RuntimeError("no stage job params to run directly")
                run = directly(stack, params, staged)
                theirs.append(run)
            say(f"round {r + 1}: {half} of {rows:,} rows in {run.seconds:.1f}s")
    handover_s = sum(run.seconds for run in ours)
    direct_s = sum(run.seconds for run in theirs)
    ratio = direct_s / handover_s
    outside = [sum(run.seconds - in_jobs(run.jobs) for run in runs) for runs in (ours, theirs)]
    lines = [
        f"large: a {rows:,}-row core database, {rounds} round(s) ordered handover, direct, "
        f"direct, handover, ... (an untimed healthcheck warmed the source first, "
        f"{warm:.1f}s): handover {handover_s:.1f}s in all, the same jobs run directly one "
        f"after the other {direct_s:.1f}s; ratio {ratio:.2f} (target >=0.9: "
        f"{verdict(ratio >= 0.9)}); time outside the jobs' runs: handover {outside[0]:.2f}s, "
        f"direct {outside[1]:.2f}s",
    ]
    for n, (ho, di) in enumerate(zip(ours, theirs, strict=True), 1):
        lines.append(f"    round {n} handover {ho.seconds:.1f}s: {ho.note}; "
                     f"{stage_times(ho.jobs, ho.begun)}")  # fmt: skip
        lines.append(f"    round {n} direct {di.seconds:.1f}s: {stage_times(di.jobs, di.begun)}")
    return ratio, lines


# -- 3. bulk under the copy cap --------------------------------------------------------------------


def most_at_once(spans: list[tuple[float, float]]) -> int:
    marks = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])  # ends first
    running = most = 0
    for _, step in marks:
        running += step
        most = max(most, running)
    return most


def bulk(stack: Stack, dbs: list[DatabaseURI], rows: int, cap: int) -> list[str]:
    server = dbs[0].secret().rpartition("/")[0]
    begun = time.time()
    answer = handovers(stack).bulk({"server_uri": server, "databases": [u.database for u in dbs],
                                    "contact": CONTACT, "comment": COMMENT})  # fmt: skip
    refused = [a for a in answer["answers"] if "token" not in a or "error" in a]
    if refused:
        raise RuntimeError(f"{len(refused)} refused in the bulk, e.g. {refused[0]}")
    submitted = time.time() - begun
    tokens = [a["token"] for a in answer["answers"]]
    ended = stack.wait_over(tokens, timeout=400)
    succeeded(ended, "bulk handovers")
    copies = stack.rows(JOBS.c.parent_id.in_(tokens))
    succeeded(copies, "copy jobs")
    spans = [(ts(c.started_at), ts(c.finished_at)) for c in copies]
    ideal = sum(e - s for s, e in spans) / cap
    took = max(e for _, e in spans) - begun
    ratio = ideal / took
    ends = sorted(e for _, e in spans)
    made, took_up = [], []
    for c in sorted(copies, key=lambda c: c.created_at)[cap:]:
        freed = max((e for e in ends if e <= ts(c.created_at)), default=None)
        if freed is not None:
            made.append(ts(c.created_at) - freed)
            took_up.append(ts(c.started_at) - freed)
    most = most_at_once(spans)
    first = min(s for s, _ in spans) - begun
    return [
        f"bulk: {len(dbs)} databases of {rows:,} rows in one bulk (submitted in {submitted:.1f}s), "
        f"copy only, cap {cap}: copy jobs' run times sum {sum(e - s for s, e in spans):.1f}s "
        f"(mean {sum(e - s for s, e in spans) / len(spans):.2f}s), ideal {ideal:.1f}s; the last "
        f"copy ended {took:.1f}s after submission; ratio {ratio:.2f} (target >=0.8: "
        f"{verdict(ratio >= 0.8)}); at most {most} copies at once ({verdict(most <= cap)}: "
        f"<= {cap})",
        f"    the first copy started {first:.2f}s after submission; a freed slot -> the next "
        f"copy job created: {spread(made)}; -> started: {spread(took_up)} (n={len(made)})",
    ]


# -- the run ---------------------------------------------------------------------------------------


def deployment(
    name: str, work: Path, pg: PrivatePostgres, broker: str, config: Path, cap: int
) -> Stack:
    subscriptions = work / "subscriptions.yaml"
    subscriptions.write_text("subscriptions: []\n")
    stack = Stack(name, work, pg, broker, handover_config=str(config), release="115",
                  subscriptions=str(subscriptions), handover_max_copies=str(cap))  # fmt: skip
    return stack


def run(args: argparse.Namespace, work: Path, closers: list[Callable[[], None]]) -> None:
    sources = Sources()
    closers.append(sources.drop_all)
    built = Built(sources, args.small, args.bulk, args.genes)
    pg, rabbit = PrivatePostgres(work), PrivateRabbit(work)
    closers.append(lambda: pg.stop("immediate") if pg.running else None)
    pg.start()
    closers.append(rabbit.close)
    rabbit.start()
    rabbit.ctl("add_vhost", "bulk")
    rabbit.ctl("set_permissions", "-p", "bulk", "guest", ".*", ".*", ".*")
    servers = contextlib.ExitStack()
    closers.append(servers.close)
    folder = work / "staging"
    folder.mkdir()
    folder.chmod(0o755)  # the staging server runs as mysql
    staging = servers.enter_context(staging_mariadb(folder / "server"))
    say(f"private PostgreSQL :{pg.port}, RabbitMQ :{rabbit.port}, staging MariaDB {staging} up")

    first = deployment("ho", work, pg, rabbit.url,
                       handover_config(work / "all.yaml", staging, ALL_STAGES), 1000)  # fmt: skip
    closers.append(first.close)
    first.workers(CONCURRENCY)
    say("workers ready: " + ", ".join(f"{q} -c {c}" for q, c in CONCURRENCY.items()))
    built.join()
    assert built.big is not None

    lines = handoff(first, built.small, built.rows["small"])
    print("\n".join(lines), flush=True)
    ratio, lines = large(first, built.big, built.rows["big"], staging, args.rounds)
    print("\n".join(lines), flush=True)
    first.close()

    broker = rabbit.url.rstrip("/") + "/bulk"
    config = handover_config(work / "copy.yaml", staging, {"copy": {}})
    second = deployment("bulk", work, pg, broker, config, args.cap)
    closers.append(second.close)
    second.workers(CONCURRENCY)
    lines = bulk(second, built.bulk, built.rows["bulk"], args.cap)
    print("\n".join(lines), flush=True)
    print(f"ratio={ratio:.2f}", flush=True)
    say("done; tearing down")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=50, help="handovers timed for the handoff")
    parser.add_argument("--bulk", type=int, default=20, help="databases in the bulk")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the 1M-row runs")
    parser.add_argument("--cap", type=int, default=2, help="copy cap of the bulk")
    parser.add_argument("--genes", type=int, default=45000, help="genes of the large database")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and its logs")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the private servers are started as postgres and rabbitmq")
    for name in [k for k in os.environ if k.startswith("PRODINF_")]:
        del os.environ[name]
    work = Path(tempfile.mkdtemp(prefix="prodinf-handover-"))
    work.chmod(0o755)  # postgres, rabbitmq and mysql work in folders under it
    (work / "logs").mkdir()
    closers: list[Callable[[], None]] = []
    code = 1
    with signals_interrupt():
        try:
            run(args, work, closers)
            code = 0
        except KeyboardInterrupt:
            say("interrupted; cleaning up")
        finally:
            for close in reversed(closers):
                try:
                    close()
                except Exception as exc:  # keep tearing down
                    say(f"teardown step failed: {exc}")
            if args.keep:
                say(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
