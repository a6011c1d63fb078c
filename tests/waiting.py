"""Waiting in tests: one polling core with a deadline, and the waits for a job to end
built on it (read from the store through a Runtime, driven in this process, or followed
over HTTP as a remote caller does).

A wait that runs out fails the test saying what it waited for and, when the caller
passes ``logs`` (e.g. ``processes.logs``), the logs of the processes involved, read at
that moment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import requests

from prodinf.runtime import Runtime
from prodinf.status import TERMINAL

__all__ = [
    "ended",
    "follow_over_http",
    "wait_for_job",
    "wait_for_jobs",
    "wait_until",
]

T = TypeVar("T")
Logs = Callable[[], str]


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    message: str | Callable[[], str] = "",
    interval: float = 0.1,
    logs: Logs | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail after
    ``timeout`` seconds naming ``message`` (a callable is asked at that moment)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            what = message() if callable(message) else message
            pytest.fail(
                f"timed out after {timeout:g} s waiting for {what}"
                + (f"\n{logs()}" if logs is not None else "")
            )
        time.sleep(interval)


def ended(rt: Runtime, job_id: str) -> dict[str, Any] | None:
    """The job's detail if it has reached a terminal status, else None."""
    detail: dict[str, Any] = rt.store.describe(job_id)
    return detail if detail["status"] in TERMINAL else None


def wait_for_job(
    rt: Runtime,
    job_id: str,
    timeout: float = 120,
    *,
    logs: Logs | None = None,
    drive: bool = False,
    interval: float = 0.2,
) -> dict[str, Any]:
    """Wait until the job reaches a terminal status in the store; its detail.

    ``drive``: no worker runs it, so drive it in this process at each look (through
    its retries' waits), as a worker would.
    """

    def look() -> dict[str, Any] | None:
        if drive:
            rt.runner.drive(job_id)
        return ended(rt, job_id)

    return wait_until(
        look,
        timeout,
        lambda: f"job {job_id} to end (still {rt.store.describe(job_id)['status']})",
        interval,
        logs,
    )


def wait_for_jobs(
    rt: Runtime, ids: list[str], timeout: float, *, logs: Logs | None = None
) -> list[str]:
    """Wait until every job has reached a terminal status; their statuses, in order."""

    def statuses() -> list[str]:
        return [rt.store.describe(i)["status"] for i in ids]

    def done() -> list[str] | None:
        now = statuses()
        return now if all(s in TERMINAL for s in now) else None

    def still() -> str:
        pending = [s for s in statuses() if s not in TERMINAL]
        return f"{len(ids)} jobs to end ({len(pending)} still {sorted(set(pending))})"

    return wait_until(done, timeout, still, 0.25, logs)


def follow_over_http(
    base: str,
    job_id: str,
    timeout: float = 200,
    *,
    logs: Logs | None = None,
    secret: str | None = None,
) -> dict[str, Any]:
    """GET ``/api/v1/jobs/<id>`` until the job ends, as a remote caller polls it; the last
    answer. Every answer must be a 200, and none may show ``secret``."""
    last: dict[str, Any] = {}

    def look() -> dict[str, Any] | None:
        answer = requests.get(f"{base}/api/v1/jobs/{job_id}", timeout=10)
        assert answer.status_code == 200, answer.text
        assert secret is None or secret not in answer.text
        last.clear()
        last.update(answer.json())
        return dict(last) if last["status"] in TERMINAL else None

    return wait_until(
        look, timeout, lambda: f"job {job_id} to end (still {last.get('status')})", 0.5, logs
    )
