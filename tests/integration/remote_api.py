"""A prodinf serving its kinds over HTTP, as another prodinf or script calls it: a
portal process and a worker process, and the client side (submit, then follow with
``tests.waiting.follow_over_http``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from prodinf.config import Settings
from tests.conftest import Processes, env_for
from tests.loopback import free_port
from tests.waiting import wait_until

__all__ = ["Portal", "portal", "submit"]


@dataclass(frozen=True)
class Portal:
    """A portal process serving at ``base``, and the worker that runs its jobs."""

    base: str
    worker: subprocess.Popen[bytes]


@pytest.fixture
def portal(servers: Settings, processes: Processes) -> Iterator[Portal]:
    """A portal process and a worker consuming the jobs queue, on RabbitMQ + PostgreSQL."""
    port = free_port()
    processes.start(
        [sys.executable, "-m", "prodinf.cli", "portal", "--port", str(port)],
        env_for(servers),
        "portal",
    )
    worker = processes.worker(servers, queues=servers.queue_jobs)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/health", timeout=3).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(up, 60, "the portal to answer", logs=processes.logs)
    yield Portal(base, worker)


def submit(base: str, kind: str, params: dict[str, Any], secret: str) -> str:
    """``POST /api/v1/jobs``; the answer must be 201 and must not show ``secret``."""
    answer = requests.post(f"{base}/api/v1/jobs", json={"kind": kind, "params": params}, timeout=30)
    assert answer.status_code == 201, answer.text
    assert secret not in answer.text
    return str(answer.json()["id"])
