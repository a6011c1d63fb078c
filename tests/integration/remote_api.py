"""A prodinf serving its kinds over HTTP, as another prodinf or script calls it: a
portal process and a worker process, and the client side (submit, then poll)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from prodinf.config import Settings
from prodinf.status import TERMINAL
from tests.conftest import Processes, env_for, wait_until
from tests.integration.servers import free_port

__all__ = ["follow", "portal", "submit"]


@pytest.fixture
def portal(servers: Settings, processes: Processes) -> Iterator[str]:
    """A portal process and a worker consuming the jobs queue; the portal's base URL."""
    port = free_port()
    processes.start(
        [sys.executable, "-m", "prodinf.cli", "portal", "--port", str(port)],
        env_for(servers),
        "portal",
    )
    processes.worker(servers, queues=servers.queue_jobs)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/health", timeout=3).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(up, 60, f"the portal to answer\n{processes.logs()}")
    yield base


def submit(base: str, kind: str, params: dict[str, Any], secret: str) -> str:
    """``POST /api/v1/jobs``; the answer must be 201 and must not show ``secret``."""
    answer = requests.post(f"{base}/api/v1/jobs", json={"kind": kind, "params": params}, timeout=30)
    assert answer.status_code == 201, answer.text
    assert secret not in answer.text
    return str(answer.json()["id"])


def follow(
    base: str, job_id: str, processes: Processes, secret: str, timeout: float = 200
) -> dict[str, Any]:
    """GET the job until it ends, as a remote caller polls it; no answer may show ``secret``."""
    deadline = time.monotonic() + timeout
    while True:
        answer = requests.get(f"{base}/api/v1/jobs/{job_id}", timeout=10)
        assert answer.status_code == 200, answer.text
        assert secret not in answer.text
        detail: dict[str, Any] = answer.json()
        if detail["status"] in TERMINAL:
            return detail
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {detail['status']}\n{processes.logs()}")
        time.sleep(0.5)
