"""Shared fixtures: embedded settings, stores per backend, the portal, loopback HTTP
servers, worker processes.

Tests that need a real server (RabbitMQ, PostgreSQL, MariaDB) skip with the
reason when it is absent on a laptop, and fail when ``CI`` is set (``tests.gates``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from prodinf.config import Settings
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.store import Base, JobStore, upgrade
from tests.gates import AMQP_URL, MYSQL_URL, POSTGRES_URL, require
from tests.integration.servers import StatusServer, WebhookReceiver
from tests.loopback import Answer, Loopback, Reply, Site


def _create_database(url: str) -> None:
    parsed = make_url(url)
    # URL.set(database=None) keeps the old name, so name each server's own admin database.
    admin = parsed.set(
        database="postgres" if parsed.get_backend_name() == "postgresql" else "mysql"
    )
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if parsed.get_backend_name() == "postgresql":
            exists = conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
            )
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
        else:
            conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{parsed.database}`"))
    engine.dispose()


def fresh_store(url: str) -> JobStore:
    """A store at ``url`` with every prodinf table dropped and migrated anew."""
    if not url.startswith("sqlite"):
        _create_database(url)
    store = JobStore(url)
    with store.engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS prodinf_alembic_version"))
    upgrade(store)
    return store


BACKENDS = ["sqlite", "postgresql", "mysql"]


def backend_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    url = POSTGRES_URL if backend == "postgresql" else MYSQL_URL
    require("PostgreSQL" if backend == "postgresql" else "MariaDB", url)
    return url


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir(mode=0o700)  # as prodinf makes it (a wider one is tightened, with a warning)
    return path


@pytest.fixture
def settings(home: Path) -> Settings:
    """Embedded settings under a temporary home, with fast reconciling for tests; the
    SQLite files jobs open may be anywhere in the test's folder (the home's parent)."""
    return Settings(
        home=home,
        reconcile_interval=0.2,
        lease_seconds=3.0,
        redrive_after=30.0,
        sqlite_roots=[home.parent],
    )


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """A freshly migrated store on each backend: SQLite, PostgreSQL, MariaDB."""
    store = fresh_store(backend_url(request.param, tmp_path))
    yield store
    store.dispose()


@pytest.fixture
def amqp_url() -> str:
    require("RabbitMQ", AMQP_URL)
    return AMQP_URL


@pytest.fixture
def postgres_url() -> str:
    require("PostgreSQL", POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
def unique_queues() -> dict[str, str]:
    """Queue names no other test uses, so a real broker's leftovers cannot interfere."""
    tag = uuid.uuid4().hex[:8]
    return {
        f"PRODINF_QUEUE_{q.upper()}": f"test-{tag}-{q}"
        for q in ("handover", "event", "email", "jobs")
    }


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a child process see ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODINF_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, list):
            value = ",".join(value)
        env[f"PRODINF_{name.upper()}"] = str(value)
    env.update(extra)
    return env


class Processes:
    """Child processes a test starts (workers, portal, beat); all stopped at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}-{len(self.children)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.children.append(proc)
        return proc

    def worker(
        self,
        settings: Settings,
        *,
        queues: str,
        module: str = "prodinf.worker",
        concurrency: int = 2,
        pool: str = "prefork",
        name: str = "worker",
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            module,
            "worker",
            "-Q",
            queues,
            "-c",
            str(concurrency),
            "-P",
            pool,
            "-l",
            "info",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"{name}-{uuid.uuid4().hex[:6]}@%h",
        ]
        return self.start(args, env_for(settings, **(extra_env or {})), name)

    def logs(self) -> str:
        """The tail of every child's log, for a failure message."""
        return "\n".join(
            f"==> {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.log_dir.glob("*.log"))
        )

    def logs_holding(self, text: str) -> list[str]:
        """The names of the children's logs in which ``text`` appears (a secret: none)."""
        return [
            p.name
            for p in sorted(self.log_dir.glob("*.log"))
            if text in p.read_text(errors="replace")
        ]

    def stop(self, *procs: subprocess.Popen[bytes]) -> None:
        """SIGTERM each process group (a worker finishes or returns what it holds), then
        SIGKILL whatever is still running after 15 s."""
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        self.stop(*self.children)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    yield procs
    procs.stop_all()


@pytest.fixture
def status() -> Iterator[StatusServer]:
    """A real HTTP server on loopback that answers like a remote job service."""
    server = StatusServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    """A real webhook receiver on loopback that keeps every call."""
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def http_server() -> Iterator[Callable[[Answer], Loopback]]:
    """Start real HTTP servers on loopback: ``http_server(answer)`` is a started
    ``tests.loopback.Loopback``; every one is closed at teardown."""
    started: list[Loopback] = []

    def start(answer: Answer) -> Loopback:
        server = Loopback(answer).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


#: What ``site`` serves at ``/ok``.
SITE_BODY = b"hello, prodinf"


@pytest.fixture
def site() -> Iterator[Site]:
    """A real HTTP server on loopback for the built-in kinds to talk to: ``/ok`` answers
    ``SITE_BODY``, ``/missing`` a 404, ``/pending`` a job still running; a test adds or
    changes ``site.routes``."""
    routes = {
        "/ok": Reply(200, SITE_BODY),
        "/missing": Reply(404, b"no"),
        "/pending": Reply(200, {"status": "running"}),
    }
    with Site(routes) as server:
        yield server


# -- the portal on embedded defaults ---------------------------------------------------------


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    """The portal on embedded settings under the test's home (SQLite store, filesystem
    broker), its store migrated; its runtime is closed at teardown."""
    app = create_app(settings)
    runtime: Runtime = app.extensions["prodinf"]
    upgrade(runtime.store)
    yield app
    runtime.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
