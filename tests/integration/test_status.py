"""``prodinf status`` on RabbitMQ + PostgreSQL, as an operator runs it beside real workers.

Given a real worker consuming the jobs queue (queue names no other test uses) and
jobs waiting on a queue no worker consumes; when the operator runs ``prodinf status``
(a real process, the shell's settings); then it shows what RabbitMQ says of each queue
(messages waiting, consumers), the worker, how long the oldest job has waited, and the
jobs by status.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from prodinf.config import Settings
from prodinf.runtime import Runtime
from tests.conftest import Processes, env_for
from tests.waiting import wait_for_job, wait_until

pytestmark = pytest.mark.integration


def status(settings: Settings, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "prodinf.cli", "status", *args],
        env=env_for(settings, COLUMNS="250"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def report(settings: Settings) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(status(settings, "--json"))
    return answer


def by_queue(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {q["queue"]: q for q in answer["queues"]}


def test_status_shows_rabbitmq_depth_and_consumers_beside_a_real_worker(
    servers: Settings, runtime: Runtime, processes: Processes
) -> None:
    # Given a worker consuming the jobs queue
    processes.worker(servers, queues=servers.queue_jobs, name="jobs")
    # and three jobs on the email queue, which no worker consumes
    waiting = [runtime.jobs.submit("it_busy_email", {})[0] for _ in range(3)]

    # When the operator asks, once the worker is consuming
    def consumed() -> dict[str, Any] | None:
        answer = report(servers)
        jobs = by_queue(answer)["jobs"]
        return answer if jobs["consumers"] == 1 and jobs["workers"] == 1 else None

    answer = wait_until(consumed, 90, "the worker consuming jobs", logs=processes.logs)

    # Then RabbitMQ's count of each queue is there: the email queue holds the three
    # messages and has no consumer; the jobs queue and its lane each have the worker
    queues = by_queue(answer)
    assert answer["broker"]["error"] == ""
    assert {k: queues["email"][k] for k in ("name", "messages", "consumers", "workers")} == {
        "name": servers.queue_email,
        "messages": 3,
        "consumers": 0,
        "workers": 0,
    }
    assert (queues["jobs"]["messages"], queues["jobs"]["lane_messages"]) == (0, 0)
    # (nothing has declared the email queue's lane yet: RabbitMQ has no such queue)
    assert queues["email"]["lane_messages"] is None
    # And how long the oldest email job has waited, from when it was queued
    first = runtime.store.describe(waiting[0]["id"])
    assert queues["email"]["oldest_queued_at"] == first["updated_at"]
    assert queues["email"]["oldest_queued_seconds"] > 0
    assert queues["jobs"]["oldest_queued_at"] is None
    # And the worker, by its name, with the queues it consumes
    (worker,) = answer["workers"]
    assert worker["name"].startswith("jobs-")
    assert worker["queues"] == sorted([servers.queue_jobs, f"{servers.queue_jobs}.due"])

    # When a job on the jobs queue has run
    done, _ = runtime.jobs.submit("it_noop4", {})
    assert wait_for_job(runtime, done["id"], 90, logs=processes.logs)["status"] == "succeeded"

    # Then the counts say so, and the table shows the same as the JSON
    assert report(servers)["counts"] == {
        "queued": 3, "running": 0, "waiting": 0, "succeeded": 1, "failed": 0,
        "cancelled": 0, "reverted": 0,
    }  # fmt: skip
    shown = status(servers)
    email = re.escape(servers.queue_email)
    assert re.search(rf"│ email +│ {email} +│ +3 │ +- │ +0 │ +0 │ +\S", shown), shown
    jobs = re.escape(servers.queue_jobs)
    assert re.search(rf"│ jobs +│ {jobs} +│ +0 │ +0 │ +1 │ +1 │ +│", shown), shown
