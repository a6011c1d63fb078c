"""Jobs run by real Celery worker processes, on embedded defaults and on RabbitMQ + PostgreSQL.

Given a store, a broker and worker processes; when jobs are submitted and
workers die or the broker restarts; then every job still ends as it should.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from prodinf.config import Settings
from prodinf.runtime import Runtime
from prodinf.status import StepStatus
from prodinf.store import StepRow
from tests.conftest import Processes
from tests.gates import require_rabbitmqctl
from tests.loopback import Answer, Loopback, Reply, Request
from tests.waiting import wait_for_job, wait_for_jobs, wait_until

pytestmark = pytest.mark.integration

BODY = b"prodinf integration payload\n" * 100


def payload_or_running(request: Request) -> Reply:
    """``/status/...`` keeps saying ``running``; any other path is ``BODY``."""
    if request.path.startswith("/status"):
        return Reply(200, {"status": "running"})
    return Reply(200, BODY)


@pytest.fixture
def web(http_server: Callable[[Answer], Loopback]) -> str:
    return http_server(payload_or_running).base


def recorded(rt: Runtime, job_id: str, step: str) -> bool:
    """Whether ``step`` of the job has a side effect recorded by ``ctx.once``."""
    with rt.store.session() as session:
        state = session.scalar(
            select(StepRow.state).where(StepRow.job_id == job_id, StepRow.name == step)
        )
    return bool((state or {}).get("effects"))


def test_http_get_reaches_succeeded(
    stack: Settings, runtime: Runtime, processes: Processes, web: str
) -> None:
    # Given a worker on the jobs queue, embedded or on RabbitMQ + PostgreSQL
    processes.worker(stack, queues=stack.queue_jobs)
    # When an http_get job is submitted
    job, created = runtime.jobs.submit("http_get", {"url": f"{web}/payload"})
    assert created
    detail = wait_for_job(runtime, job["id"], 60, logs=processes.logs)
    # Then it succeeds with the digest of what it fetched
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
    wait_until(effects.exists, 60, "the step's side effect", logs=processes.logs)
    wait_until(
        lambda: recorded(runtime, job["id"], "effect"),
        30,
        "the effect recorded",
        logs=processes.logs,
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    processes.worker(stack, queues=stack.queue_jobs, concurrency=2, name="rescuer")
    statuses = wait_for_jobs(runtime, [job["id"], *others], 120, logs=processes.logs)
    assert statuses == ["succeeded"] * 6, processes.logs()
    assert effects.read_text().splitlines() == [job["id"]]  # the side effect happened once
    events = [h["event"] for h in runtime.store.describe(job["id"])["history"]]
    assert "step.resumed" in events


def test_failure_reverts_in_reverse_order_then_retry_resumes(
    stack: Settings, runtime: Runtime, processes: Processes, tmp_path: Path
) -> None:
    # Given a worker, and a four-step job whose check step fails while a cause is there
    log, cause = tmp_path / "log.txt", tmp_path / "cause"
    cause.touch()
    processes.worker(stack, queues=stack.queue_jobs)
    # When it runs
    job, _ = runtime.jobs.submit("it_revert", {"log_file": str(log), "cause_file": str(cause)})
    detail = wait_for_job(runtime, job["id"], 60, logs=processes.logs)
    # Then it is reverted: the done steps are undone, last first
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

    # When the cause is fixed and the job retried
    cause.unlink()  # the cause is fixed
    runtime.jobs.retry(job["id"])
    detail = wait_for_job(runtime, job["id"], 60, logs=processes.logs)
    # Then it succeeds
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
    # Given a RabbitMQ on this machine that rabbitmqctl may restart
    assert servers.broker_url is not None
    require_rabbitmqctl(servers.broker_url)
    # and jobs queued with no worker running, and jobs in flight on a running worker,
    queued = [runtime.jobs.submit("it_noop4", {})[0]["id"] for _ in range(20)]
    rabbitmq_restart()
    processes.worker(servers, queues=servers.queue_jobs)
    in_flight = [runtime.jobs.submit("it_noop4", {"sleep": 0.2})[0]["id"] for _ in range(20)]
    wait_until(
        lambda: runtime.store.counts().get("succeeded", 0) >= 25,
        120,
        "some progress",
        logs=processes.logs,
    )
    # when the broker restarts again under load,
    rabbitmq_restart()
    # then every job still finishes.
    statuses = wait_for_jobs(runtime, queued + in_flight, 180, logs=processes.logs)
    assert statuses == ["succeeded"] * 40, processes.logs()


def held_by(rt: Runtime, job_ids: list[str]) -> dict[str, int]:
    """How many of these jobs' steps are in each status, and how many hold a lease (a
    worker slot) as ``"leased"``."""
    with rt.store.session() as session:
        rows = session.execute(
            select(StepRow.status, func.count())
            .where(StepRow.job_id.in_(job_ids))
            .group_by(StepRow.status)
        ).all()
        leased = session.scalar(
            select(func.count())
            .select_from(StepRow)
            .where(StepRow.job_id.in_(job_ids), StepRow.lease_owner.is_not(None))
        )
    return {**{str(status): int(n) for status, n in rows}, "leased": int(leased or 0)}


@pytest.mark.slow
def test_a_thousand_waiting_jobs_hold_no_worker_slot(
    servers: Settings, runtime: Runtime, processes: Processes, web: str
) -> None:
    # Given one worker with two slots, and 1,000 jobs waiting on a remote service that
    # keeps saying "running" (looked at again in 10 minutes, after this test),
    processes.worker(servers, queues=servers.queue_jobs, concurrency=2)
    waiting = [
        runtime.jobs.submit("wait_for_url", {"url": f"{web}/status/{i}", "interval": 600})[0]["id"]
        for i in range(1000)
    ]
    wait_until(
        lambda: runtime.store.counts().get("waiting", 0) >= 1000,
        300,
        "1,000 jobs to be waiting",
        interval=1,
        logs=processes.logs,
    )
    # when other jobs are submitted meanwhile,
    others = [runtime.jobs.submit("it_noop4", {})[0]["id"] for _ in range(20)]
    # then they all finish (were a waiting job holding a slot, two would block them all),
    assert wait_for_jobs(runtime, others, 300, logs=processes.logs) == ["succeeded"] * 20
    # while every one of the 1,000 still waits, as a row: no step of theirs runs or
    # holds a lease.
    assert runtime.store.counts().get("waiting", 0) == len(waiting)
    assert held_by(runtime, waiting) == {StepStatus.WAITING: 1000, "leased": 0}
