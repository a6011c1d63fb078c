"""Shared fixtures: embedded settings, real-server gates, stores per backend, worker processes.

Tests that need a real server (RabbitMQ, PostgreSQL, MariaDB) skip with the
reason when it is absent on a laptop, and fail when ``CI`` is set.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from prodinf.config import Settings
from prodinf.store import Base, JobStore, upgrade
from tests.integration.servers import StatusServer, WebhookReceiver

CI = bool(os.environ.get("CI"))

POSTGRES_URL = os.environ.get(
    "PRODINF_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/prodinf_test"
)
MYSQL_URL = os.environ.get(
    "PRODINF_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/prodinf_test"
)
AMQP_URL = os.environ.get("PRODINF_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def reachable(url: str) -> bool:
    parts = urlsplit(url.replace("+psycopg", "").replace("+pymysql", ""))
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2):
            return True
    except OSError:
        return False


def require(name: str, url: str) -> None:
    """Skip (laptop) or fail (CI) unless the server behind ``url`` answers."""
    if reachable(url):
        return
    message = f"{name} is not reachable at {urlsplit(url).netloc.split('@')[-1]}"
    if CI:
        pytest.fail(f"{message}, and CI is set: the integration tier must run")
    pytest.skip(f"{message}; start it to run this test")


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
    path.mkdir()
    return path


@pytest.fixture
def settings(home: Path) -> Settings:
    """Embedded settings under a temporary home, with fast reconciling for tests."""
    return Settings(home=home, reconcile_interval=0.2, lease_seconds=3.0, redrive_after=30.0)


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
        return "\n".join(
            f"==> {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.log_dir.glob("*.log"))
        )

    def stop_all(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    yield procs
    procs.stop_all()


def wait_until(
    predicate: Callable[[], Any], timeout: float, message: str = "", interval: float = 0.1
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s: {message}")
        time.sleep(interval)


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
