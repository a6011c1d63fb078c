"""A step's log lines from a real worker process, where a user reads them: the worker's
own output (with the job and step), the API, ``prodinf logs`` and the job page in a real
browser; on embedded defaults, then on RabbitMQ + PostgreSQL.

Given a worker running a plugin kind whose step logs through ``ctx.log``, a library's
logger and ``print``; when its job has run; then each line is where the user looks,
and the job's password is nowhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest
from flask import Flask

from prodinf.config import Settings
from prodinf.portal import create_app
from tests.conftest import Processes, env_for
from tests.embedded import runtime_of
from tests.integration.browser import WebDriver
from tests.waiting import wait_for_job

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PASSWORD = "it-Logs-Pw-9917"


@pytest.fixture
def app(stack: Settings) -> Iterator[Flask]:
    """The portal on the stack's store (``live`` serves it)."""
    app = create_app(stack)
    yield app
    runtime_of(app).close()


@pytest.mark.slow
def test_a_steps_lines_reach_the_worker_output_the_api_the_cli_and_the_page(
    stack: Settings,
    app: Flask,
    live: str,
    processes: Processes,
    browser: WebDriver,
) -> None:
    # Given a worker with the plugin kinds, and a job whose step logs three ways
    processes.worker(stack, queues=stack.queue_jobs)
    rt = runtime_of(app)
    job, _ = rt.jobs.submit("it_logs", {"rows": 7, "password": PASSWORD})
    job_id = job["id"]

    # When the worker has run it
    detail = wait_for_job(rt, job_id, 90, logs=processes.logs)
    assert detail["status"] == "succeeded", processes.logs()

    # Then the worker's own output names the job and step on the step's lines
    worker_log = processes.logs()
    assert f"job={job_id} step=copy copied 7 rows" in worker_log

    # And the API holds the lines, the password masked
    with urllib.request.urlopen(f"{live}/api/v1/jobs/{job_id}/logs", timeout=30) as answer:
        body = json.loads(answer.read())
    said = [(i["step"], i["level"], i["logger"], i["message"]) for i in body["items"]]
    assert said == [
        ("copy", "INFO", "prodinf.steps.it_logs", "copied 7 rows"),
        ("copy", "WARNING", "it_logs.driver", "logged in with password ***"),
        ("copy", "WARNING", "celery.redirected", "printed: 7 rows done"),
    ]

    # And prodinf logs prints them, given the start of the id a page shows
    done = subprocess.run(
        [sys.executable, "-m", "prodinf.cli", "logs", job_id[:8]],
        env=env_for(stack),  # from here, where the worker found the plugin kinds too
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "[copy#1] prodinf.steps.it_logs: copied 7 rows" in done.stdout
    assert "it_logs.driver: logged in with password ***" in done.stdout

    # And the job page shows the step's log in the browser, unfolded by a click
    browser.go(f"{live}/jobs/{job_id}")
    browser.click("#step-copy-log summary")
    browser.wait_for("the step's log", lambda: "copied 7 rows" in browser.text("#step-copy-log"))
    shown = browser.text("#step-copy-log")
    assert "WARNING it_logs.driver logged in with password ***" in shown
    assert browser.text("#step-copy-log .log-warning .log-level") == "WARNING"

    # And the password is in no log of any process, nor on the page
    assert processes.logs_holding(PASSWORD) == []
    assert PASSWORD not in shown
