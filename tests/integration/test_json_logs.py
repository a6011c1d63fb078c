"""``PRODINF_LOG_FORMAT=json`` as a log collector reads it: every line a process writes
is one JSON object, the lines a job's step logs carry its job, kind, step, queue and
attempt, and no secret appears.

Given a real worker process (embedded defaults, then RabbitMQ + PostgreSQL), and then
``prodinf up`` with its portal, workers and scheduler; when a plugin kind's step logs
through ``ctx.log``, a library's logger and ``print``, with a password among its
params; then each process's output parses line by line.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import requests

from prodinf.config import Settings
from prodinf.runtime import Runtime
from tests.conftest import Processes
from tests.integration.conftest import PLUGIN
from tests.integration.up import running_up
from tests.waiting import follow_over_http, wait_for_job, wait_until

pytestmark = pytest.mark.integration

PASSWORD = "it-Json-Pw-5521"
#: What the step of ``it_logs`` logs (tests/integration/plugin_kinds.py), in order.
STEP_LINES = [
    ("prodinf.steps.it_logs", "copied 7 rows"),
    ("it_logs.driver", "logged in with password ***"),
    ("celery.redirected", "printed: 7 rows done"),
]
REPO = Path(__file__).resolve().parents[2]


def json_lines(text: str, where: str) -> list[dict[str, Any]]:
    """Every line of ``text`` parsed; a line that is not a JSON object fails the test."""
    parsed = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            item = json.loads(line)
        except ValueError:
            pytest.fail(f"{where}, line {number} is not JSON: {line!r}\n{text[-3000:]}")
        assert isinstance(item, dict), f"{where}, line {number}: {line!r}"
        assert {"time", "level", "logger", "message", "process"} <= set(item), line
        parsed.append(item)
    assert parsed, f"{where} wrote nothing"
    return parsed


def assert_step_lines(lines: list[dict[str, Any]], job_id: str, queue: str) -> None:
    """The step's three lines, in order, each naming its job, kind, step, queue, attempt."""
    of_job = [line for line in lines if line.get("job_id") == job_id]
    assert [(line["logger"], line["message"]) for line in of_job] == STEP_LINES
    for line in of_job:
        assert (line["kind"], line["step"], line["queue"], line["attempt"]) == (
            "it_logs",
            "copy",
            queue,
            1,
        )


def test_a_workers_output_is_json_lines_with_the_job_fields(
    stack: Settings, runtime: Runtime, processes: Processes
) -> None:
    # Given a worker writing JSON lines
    worker = processes.worker(
        stack, queues=stack.queue_jobs, name="json", extra_env={"PRODINF_LOG_FORMAT": "json"}
    )
    # When a job whose step logs three ways, with a password among its params, has run
    job, _ = runtime.jobs.submit("it_logs", {"rows": 7, "password": PASSWORD})
    detail = wait_for_job(runtime, job["id"], 90, logs=processes.logs)
    assert detail["status"] == "succeeded", processes.logs()
    # and the worker has stopped (what it says as it stops is a line too)
    processes.stop(worker)

    # Then every line of its output is a JSON object
    (log,) = processes.log_dir.glob("json-*.log")
    lines = json_lines(log.read_text(), log.name)
    # And the step's lines carry the job's fields
    assert_step_lines(lines, job["id"], stack.queue_jobs)
    # And what Celery would have printed (banner, shutdown) is there as log lines
    said = [line["message"] for line in lines]
    assert any(m.endswith(" ready.") for m in said), said
    assert "worker: Warm shutdown (MainProcess)" in said
    # And the password is nowhere
    assert processes.logs_holding(PASSWORD) == []


@pytest.mark.slow
def test_prodinf_up_and_every_process_it_starts_write_json_lines(
    home: Path, tmp_path: Path
) -> None:
    # Given prodinf up with PRODINF_LOG_FORMAT=json, and the test's plugin kinds
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODINF_")}
    env.update(
        PRODINF_HOME=str(home),
        PRODINF_LOG_FORMAT="json",
        PRODINF_PLUGINS=PLUGIN,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    with running_up(env, tmp_path, home, tmp_path / "up.out") as up:
        # When a user asks its portal, and submits a job through the API
        wait_until(
            lambda: requests.get(f"{up.url}/health", timeout=5).status_code == 200,
            60,
            "/health",
            logs=up.logs,
        )
        posted = requests.post(
            f"{up.url}/api/v1/jobs",
            json={"kind": "it_logs", "params": {"rows": 7, "password": PASSWORD}},
            timeout=30,
        )
        assert posted.status_code == 201, posted.text
        job_id = posted.json()["id"]
        assert follow_over_http(up.url, job_id, 90, logs=up.logs)["status"] == "succeeded"
        # and stops it with Ctrl-C
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(timeout=45) == 0, up.logs()

    # Then up's own output is JSON lines: what it says, and the portal's requests
    lines = json_lines(up.output(), "prodinf up")
    said = [(line["logger"], line["message"]) for line in lines]
    assert any(m.startswith("prodinf is up at http://") for _, m in said), said
    assert ("prodinf.up", "stopped.") in said
    assert any(name == "werkzeug" and "GET /health" in m for name, m in said), said
    # And so is every child's log: each worker, and the scheduler
    logs = {log.name: log.read_text() for log in sorted((home / "logs").glob("*.log"))}
    assert set(logs) >= {"worker-jobs.log", "worker-email.log", "scheduler.log"}, list(logs)
    parsed = {name: json_lines(text, name) for name, text in logs.items()}
    assert_step_lines(parsed["worker-jobs.log"], job_id, "jobs")
    assert any(line["message"] == "beat: Starting..." for line in parsed["scheduler.log"])
    # And the password is in none of them
    assert PASSWORD not in up.output()
    assert [name for name, text in logs.items() if PASSWORD in text] == []
