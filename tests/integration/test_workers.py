"""Jobs run by real Celery worker processes, on embedded defaults and on RabbitMQ + PostgreSQL.

Given a store, a broker and worker processes; when jobs are submitted and
workers die or the broker restarts; then every job still ends as it should.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from prodinf.config import Settings
from prodinf.runtime import Runtime
from prodinf.status import TERMINAL
from prodinf.store import StepRow
from tests.conftest import Processes, wait_until

pytestmark = pytest.mark.integration

BODY = b"prodinf integration payload\n" * 100


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/status"):
            body = b'{"status": "running"}'
            kind = "application/json"
        else:
            body, kind = BODY, "application/octet-stream"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def recorded(rt: Runtime, job_id: str, step: str) -> bool:
    """Whether ``step`` of the job has a side effect recorded by ``ctx.once``."""
    with rt.store.session() as session:
        state = session.scalar(
            select(StepRow.state).where(StepRow.job_id == job_id, StepRow.name == step)
        )
    return bool((state or {}).get("effects"))


def finished(rt: Runtime, job_id: str) -> dict[str, Any] | None:
    detail = rt.store.describe(job_id)
    return detail if detail["status"] in TERMINAL else None


def wait_all(rt: Runtime, ids: list[str], timeout: float, procs: Processes) -> list[str]:
    def done() -> list[str] | None:
        statuses = [rt.store.describe(i)["status"] for i in ids]
        return statuses if all(s in TERMINAL for s in statuses) else None

    try:
        return wait_until(done, timeout, f"{len(ids)} jobs to finish", interval=0.25)
    except BaseException:
        print(procs.logs())
        raise


def test_http_get_reaches_succeeded(
    stack: Settings, runtime: Runtime, processes: Processes, web: str
) -> None:
    processes.worker(stack, queues=stack.queue_jobs)
    job, created = runtime.jobs.submit("http_get", {"url": f"{web}/payload"})
    assert created
    detail = wait_until(lambda: finished(runtime, job["id"]), 60, "http_get to finish")
    assert detail["status"] == "succeeded", processes.logs()
    assert detail["result"] == {
        "status_code": 200,
        "bytes": len(BODY),
        "sha256": hashlib.sha256(BODY).hexdigest(),
    }
    assert [s["status"] for s in detail["steps"]] == ["succeeded"]


def test_worker_killed_mid_step_another_finishes_effect_once(
    stack: Settings, runtime: Runtime, processes: Processes, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.txt"
    first = processes.worker(stack, queues=stack.queue_jobs, concurrency=1, name="doomed")
    job, _ = runtime.jobs.submit("it_effect", {"effect_file": str(effects), "sleep": 6})
    others = [runtime.jobs.submit("it_noop4", {})[0]["id"] for _ in range(5)]
    # When the step has done its side effect, recorded it, and is sleeping, kill the
    # worker outright. (Between doing an effect and recording it there is a moment a
    # crash repeats it; ctx.once closes every window after that moment.)
    wait_until(effects.exists, 60, "the step's side effect")
    wait_until(lambda: recorded(runtime, job["id"], "effect"), 30, "the effect recorded")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    processes.worker(stack, queues=stack.queue_jobs, concurrency=2, name="rescuer")
    statuses = wait_all(runtime, [job["id"], *others], 120, processes)
    assert statuses == ["succeeded"] * 6, processes.logs()
    assert effects.read_text().splitlines() == [job["id"]]  # the side effect happened once
    events = [h["event"] for h in runtime.store.describe(job["id"])["history"]]
    assert "step.resumed" in events


def test_failure_reverts_in_reverse_order_then_retry_resumes(
    stack: Settings, runtime: Runtime, processes: Processes, tmp_path: Path
) -> None:
    log, cause = tmp_path / "log.txt", tmp_path / "cause"
    cause.touch()
    processes.worker(stack, queues=stack.queue_jobs)
    job, _ = runtime.jobs.submit("it_revert", {"log_file": str(log), "cause_file": str(cause)})
    detail = wait_until(lambda: finished(runtime, job["id"]), 60, "job to end")
    assert detail["status"] == "reverted", processes.logs()
    assert detail["error"]["step"] == "check"
    assert "bad input" in detail["error"]["message"]
    assert log.read_text().splitlines() == [
        "run prepare",
        "run copy",
        "run register",
        "run check",
        "revert register",
        "revert copy",
    ]
    by_name = {s["name"]: s["status"] for s in detail["steps"]}
    assert by_name == {
        "prepare": "succeeded",
        "copy": "reverted",
        "register": "reverted",
        "check": "failed",
    }

    cause.unlink()  # the cause is fixed
    runtime.jobs.retry(job["id"])
    detail = wait_until(lambda: finished(runtime, job["id"]), 60, "retried job to end")
    assert detail["status"] == "succeeded", processes.logs()
    # prepare kept its output and did not run again; what was undone is done again.
    assert log.read_text().splitlines()[6:] == ["run copy", "run register", "run check"]


def rabbitmq_restart() -> None:
    for action in ("stop_app", "start_app"):
        subprocess.run(["rabbitmqctl", action], check=True, capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "await_startup"], check=True, capture_output=True, timeout=120)


@pytest.mark.slow
def test_rabbitmq_restart_loses_no_job(
    servers: Settings, runtime: Runtime, processes: Processes
) -> None:
    # Given jobs queued with no worker running, and jobs in flight on a running worker,
    queued = [runtime.jobs.submit("it_noop4", {})[0]["id"] for _ in range(20)]
    rabbitmq_restart()
    processes.worker(servers, queues=servers.queue_jobs)
    in_flight = [runtime.jobs.submit("it_noop4", {"sleep": 0.2})[0]["id"] for _ in range(20)]
    wait_until(lambda: runtime.store.counts().get("succeeded", 0) >= 25, 120, "some progress")
    # when the broker restarts again under load,
    rabbitmq_restart()
    # then every job still finishes.
    statuses = wait_all(runtime, queued + in_flight, 180, processes)
    assert statuses == ["succeeded"] * 40, processes.logs()


def time_jobs(rt: Runtime, n: int, procs: Processes) -> float:
    started = time.monotonic()
    ids = [rt.jobs.submit("it_noop4", {})[0]["id"] for _ in range(n)]
    assert wait_all(rt, ids, 120, procs) == ["succeeded"] * n
    return time.monotonic() - started


@pytest.mark.slow
def test_a_thousand_waiting_jobs_hold_no_worker_slot(
    servers: Settings, runtime: Runtime, processes: Processes, web: str
) -> None:
    processes.worker(servers, queues=servers.queue_jobs, concurrency=2)
    time_jobs(runtime, 5, processes)  # warm up
    baseline = time_jobs(runtime, 20, processes)
    # Given 1,000 jobs waiting on a remote service that keeps saying "running",
    waiting = [
        runtime.jobs.submit("wait_for_url", {"url": f"{web}/status/{i}", "interval": 600})[0]["id"]
        for i in range(1000)
    ]
    wait_until(
        lambda: runtime.store.counts().get("waiting", 0) >= 1000,
        300,
        "1,000 jobs to be waiting",
        interval=1,
    )
    # when other jobs are submitted meanwhile,
    loaded = time_jobs(runtime, 20, processes)
    # then they finish about as fast as with no waits pending, and the waits still wait.
    print(f"20 jobs: {baseline:.2f}s with no waits pending, {loaded:.2f}s with 1,000")
    assert loaded <= max(3 * baseline, baseline + 5), (baseline, loaded)
    assert runtime.store.counts().get("waiting", 0) == len(waiting)
