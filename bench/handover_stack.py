"""What ``bench/handover.py`` runs on: source databases on the machine's MariaDB, a
handover configuration, a prodinf (``bench/events_stack.py``'s ``Deployment``) with a
worker per queue at the concurrency asked, and the job rows it reads timings from.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import NullPool, select, text

from bench.events_stack import Deployment
from bench.recovery import Child, wait_ready
from prodinf.databases.uri import DatabaseURI
from prodinf.status import TERMINAL
from prodinf.store.models import JOBS
from tests.sample_data import build_core_like

__all__ = ["MODULES", "SOURCE", "Sources", "Stack", "handover_config"]

#: The source server: the machine's MariaDB (root, no password).
SOURCE = os.environ.get("BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql")
#: The ``celery -A`` module of each queue's worker.
MODULES = {
    "handover": "prodinf.handover_tasks",
    "jobs": "prodinf.worker",
    "event": "prodinf.event_tasks",
    "email": "prodinf.email_tasks",
}
_COLUMNS = (JOBS.c.id, JOBS.c.kind, JOBS.c.status, JOBS.c.parent_id, JOBS.c.parent_step,
            JOBS.c.created_at, JOBS.c.started_at, JOBS.c.finished_at, JOBS.c.error)  # fmt: skip


class Sources:
    """Core-like databases on the source server, each named ``<dataset>_core_115_38``
    with a dataset unique to this run; every one made is dropped by ``drop_all``."""

    def __init__(self, server: str = SOURCE) -> None:
        self.server = DatabaseURI.parse(server)
        self.tag = f"bho{uuid.uuid4().hex[:6]}"
        self.made: list[DatabaseURI] = []
        self.lock = threading.Lock()

    def name(self, label: str) -> str:
        return f"{self.tag}{label}_core_115_38"

    def build(self, label: str, genes: int) -> tuple[DatabaseURI, int]:
        """A database built row by row (``tests.sample_data``), and its rows."""
        uri = self._made(self.name(label))
        return uri, sum(build_core_like(uri, genes=genes, species=f"{self.tag}{label}").values())

    def clone(self, template: DatabaseURI, label: str) -> DatabaseURI:
        """A copy of ``template`` made inside the server (same tables, keys and rows; its
        own species name), much faster than building it again."""
        uri = self._made(self.name(label))
        old, new = template.database, uri.database
        engine = template.create_engine(poolclass=NullPool)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE `{new}`")
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
                tables = [str(r[0]) for r in conn.exec_driver_sql("SHOW TABLES")]
                for table in tables:
                    ddl = conn.exec_driver_sql(f"SHOW CREATE TABLE `{table}`").one()[1]
                    conn.exec_driver_sql(f"USE `{new}`")
                    conn.exec_driver_sql(ddl)
                    conn.exec_driver_sql(f"INSERT INTO `{table}` SELECT * FROM `{old}`.`{table}`")
                    conn.exec_driver_sql(f"USE `{old}`")
                conn.execute(
                    text(f"UPDATE `{new}`.meta SET meta_value = :v "
                         "WHERE meta_key = 'species.production_name'"),
                    {"v": f"{self.tag}{label}"},
                )  # fmt: skip
        finally:
            engine.dispose()
        return uri

    def _made(self, database: str) -> DatabaseURI:
        uri = self.server.with_database(database)
        with self.lock:
            self.made.append(uri)
        return uri

    def drop_all(self) -> None:
        for uri in self.made:
            uri.drop()
        self.made.clear()


def handover_config(path: Path, staging: str, stages: dict[str, Any]) -> Path:
    """A configuration accepting core databases now, running ``stages``, all staged on
    ``staging``."""
    document = {
        "release_key": "schema_version",
        "types": {"core": {"window": {"opens": "2026-01-01T00:00:00Z"}, "stages": stages}},
        "staging": [{"name": "bench-staging", "server": staging}],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class Stack(Deployment):
    """A ``Deployment`` whose workers run at the concurrency asked, each queue with its
    own ``celery -A`` module; and the rows the bench reads back."""

    closed = False

    def worker(self, queues: str, module: str = "prodinf.worker", concurrency: int = 2) -> Child:
        label = f"{self.name}-{queues.replace(',', '+')}"
        return self.procs.start(
            label,
            ["-m", "celery", "-A", module, "worker", "-Q", queues, "-c", str(concurrency),
             "-P", "prefork", "-l", "info", "--without-gossip", "--without-mingle",
             "-n", f"{label}@%h"],
        )  # fmt: skip

    def workers(self, concurrency: dict[str, int]) -> None:
        """A worker per queue of ``concurrency``; returns once each is ready."""
        started = [self.worker(q, MODULES[q], c) for q, c in concurrency.items()]
        for child in started:
            wait_ready(child)
        time.sleep(2)  # the pools' processes start after "ready"

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            super().close()

    def rows(self, *where: Any) -> list[Any]:
        """Job rows: id, kind, status, parent, created/started/finished, error."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(*_COLUMNS).where(*where)).all())

    def wait_over(self, ids: Iterable[str], timeout: float, poll: float = 0.2) -> list[Any]:
        """Wait until every job of ``ids`` is over; their rows."""
        wanted = list(ids)
        deadline = time.monotonic() + timeout
        while True:
            found = self.rows(JOBS.c.id.in_(wanted))
            if len(found) == len(wanted) and all(r.status in TERMINAL for r in found):
                return found
            if time.monotonic() > deadline:
                open_ = [r for r in found if r.status not in TERMINAL]
                raise RuntimeError(f"{len(open_)} of {len(wanted)} jobs still open")
            time.sleep(poll)

    def claims(self, job_ids: Iterable[str]) -> dict[tuple[str, str], list[float]]:
        """Per (job, step), when it was claimed again after a wait (``bench_wakes``)."""
        found: dict[tuple[str, str], list[float]] = {}
        wanted = set(job_ids)
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT job_id, step, at FROM bench_wakes ORDER BY at"))
            for job_id, step, moment in rows:
                if job_id in wanted:
                    found.setdefault((job_id, step), []).append(float(moment))
        return found
