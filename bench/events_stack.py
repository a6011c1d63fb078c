"""A prodinf deployment for ``bench/events.py``, on a private PostgreSQL cluster and
RabbitMQ node (``bench/recovery.py``'s): its own database and vhost, workers and portal
in their own process groups, and what the bench reads back from the store.

The store keeps no record of a waiting step being claimed again (its ``started_at`` is
its first start), so each database gets a trigger that does: ``bench_wakes`` holds one
row per step going from ``waiting`` to ``running``, with ``clock_timestamp()`` and the
step's ``due_at`` just before (when it was woken). No other transition fires it.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from bench.recovery import ROOT, Child, PrivatePostgres, Processes, wait_health
from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.runtime import Runtime
from prodinf.status import TERMINAL
from prodinf.store import JobStore, upgrade
from prodinf.store.models import HISTORY, JOBS
from tests.procstat import tree_cpu

__all__ = ["Cpu", "Deployment", "at"]

#: Seconds a wait for jobs to settle may take before the run gives up.
TIMEOUT = 300.0

TRIGGER = """
CREATE TABLE bench_wakes (job_id varchar(36), step varchar(100), due float8, at float8);
CREATE FUNCTION bench_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO bench_wakes VALUES (NEW.job_id, NEW.name, extract(epoch FROM OLD.due_at),
                                  extract(epoch FROM clock_timestamp()));
  RETURN NULL;
END $$;
CREATE TRIGGER bench_wake AFTER UPDATE ON prodinf_steps FOR EACH ROW
  WHEN (OLD.status = 'waiting' AND NEW.status = 'running') EXECUTE FUNCTION bench_wake();
"""


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class Deployment:
    """One prodinf: database ``bench_<name>``, a broker vhost, its settings (``values``
    beside the defaults), a runtime here (what the portal submits through), workers."""

    def __init__(self, name: str, work: Path, pg: PrivatePostgres, broker: str, **values: str):
        self.name = name
        self.url = make_url(pg.url).set(database=f"bench_{name}").render_as_string(False)
        admin = create_engine(
            make_url(pg.url).set(database="postgres"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "bench_{name}"'))
        admin.dispose()
        store = JobStore(self.url)
        upgrade(store)
        with store.engine.begin() as conn:
            conn.exec_driver_sql(TRIGGER)
        store.engine.dispose()
        values = {"home": str(work / f"home-{name}"), "database_url": self.url,
                  "broker_url": broker, **values}  # fmt: skip
        self.settings = Settings(**values)  # type: ignore[arg-type]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRODINF_")}
        env.update({f"PRODINF_{k.upper()}": v for k, v in values.items()})
        env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.procs = Processes(env, work / "logs")
        self.engine = create_engine(self.url, pool_size=3)
        self.rt = Runtime(self.settings, create_celery(self.settings))
        self.base = ""

    def worker(self, queues: str, module: str = "prodinf.worker") -> Child:
        label = f"{self.name}-{queues.replace(',', '+')}"
        return self.procs.start(
            label,
            ["-m", "celery", "-A", module, "worker", "-Q", queues, "-c", "2", "-P", "prefork",
             "-l", "info", "--without-gossip", "--without-mingle", "-n", f"{label}@%h"],
        )  # fmt: skip

    def portal(self, port: int) -> None:
        self.procs.start(
            f"{self.name}-portal", ["-m", "prodinf.cli", "portal", "--port", str(port)]
        )
        self.base = f"http://127.0.0.1:{port}"
        wait_health(self.base)

    def jobs(self, since: float, *where: Any) -> list[Any]:
        """The jobs created since ``since``: id, kind, status, parent_id, finished_at, error."""
        query = select(JOBS.c.id, JOBS.c.kind, JOBS.c.status, JOBS.c.parent_id,
                       JOBS.c.finished_at, JOBS.c.error)  # fmt: skip
        with self.engine.connect() as conn:
            return list(conn.execute(query.where(JOBS.c.created_at >= at(since), *where)).all())

    def settle(
        self, since: float, expected: int, stuck: Callable[[list[Any]], set[str]]
    ) -> set[str]:
        """Wait until ``expected`` jobs were created since ``since`` and each is over or
        ``stuck`` (or the parent of one: it never ends either); return the stuck ones."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            rows = self.jobs(since)
            open_ = [r for r in rows if r.status not in TERMINAL]
            held = stuck(rows)
            held |= {r.parent_id for r in open_ if r.id in held and r.parent_id}
            if len(rows) >= expected and all(r.id in held for r in open_):
                return held
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {len(open_)} of {len(rows)} jobs still open")
            time.sleep(0.2)

    def wakes(self, step: str) -> dict[str, list[tuple[float, float]]]:
        """Each job's claims of ``step`` after a wait: (when, its ``due_at`` then), in order."""
        found: dict[str, list[tuple[float, float]]] = defaultdict(list)
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT job_id, at, due FROM bench_wakes WHERE step = :s ORDER BY at"),
                {"s": step},
            ).all()
        for job_id, moment, due in rows:
            found[job_id].append((moment, due))
        return found

    def first_runs(self, since: float, step: str) -> int:
        """First runs of ``step`` since ``since`` (an event whose processes were started
        as it was recorded has none: its job starts out waiting)."""
        query = select(func.count()).where(
            HISTORY.c.event == "step.started", HISTORY.c.step == step, HISTORY.c.at >= at(since)
        )
        with self.engine.connect() as conn:
            return int(conn.scalar(query) or 0)

    def resumed(self, since: float) -> int:
        """Steps taken over since ``since`` once the lease of the worker holding them ran out."""
        query = select(func.count()).where(
            HISTORY.c.event == "step.resumed", HISTORY.c.at >= at(since)
        )
        with self.engine.connect() as conn:
            return int(conn.scalar(query) or 0)

    def close(self) -> None:
        self.procs.stop_all()
        self.rt.close()
        self.engine.dispose()


class Cpu:
    """CPU seconds used by each part of the stack (a process and its children: a worker's
    pool, PostgreSQL's backends), by this script, and by the whole machine (other work
    running meanwhile shows there), summed per half of the fan-out."""

    def __init__(self, parts: dict[str, int]) -> None:
        self.parts = parts
        self.used: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def read(self) -> dict[str, float]:
        got = {name: tree_cpu(pid) for name, pid in self.parts.items()}
        got["bench"] = time.process_time()
        ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        got["machine"] = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
        return got

    def add(self, half: str, before: dict[str, float], wall: float) -> None:
        for name, value in self.read().items():
            self.used[half][name] += value - before[name]
        self.used[half]["wall"] += wall

    def line(self, half: str) -> str:
        used = self.used[half]
        parts = ", ".join(f"{name} {used[name]:.1f}" for name in [*self.parts, "bench"])
        cpus = os.cpu_count() or 1
        return (
            f"cpu s, {half}: {parts}; the machine {used['machine']:.1f} of "
            f"{used['wall'] * cpus:.1f} ({used['wall']:.1f} s wall x {cpus} cpus)"
        )
