"""A subscription runs a job on an HTTP job service of another contract (``type: http``),
here a real loopback server that says ``incomplete``/``running``/``complete``/``failed``
and keeps the job id under ``run.ref``: the ``remote_job``, run by an event worker on
RabbitMQ + PostgreSQL, drives it as the services file says, and reports success,
failure, an unknown status and a deadline passed."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prodinf.celery_app import create_celery
from prodinf.kinds.event_record import record_event
from prodinf.runtime import Runtime
from tests.conftest import Processes
from tests.integration.conftest import delete_queues, stack_settings
from tests.loopback import Loopback, Reply, Request
from tests.waiting import wait_for_job

pytestmark = pytest.mark.integration

TOKEN = "dc-token-3f9a1c"

SERVICES = """
services:
  - name: datacheck
    type: http
    url: {url}
    token_env: DC_TOKEN
    submit:
      method: POST
      path: /runs
      body: {{mode: "{{{{ params.mode }}}}", db: "{{{{ params.db }}}}", key: "{{{{ key }}}}"}}
    job_id: /run/ref
    status_url: "/runs/{{{{ job_id }}}}"
    status: /state
    pending: [incomplete, running]
    succeeded: [complete]
    failed: [failed]
    result: /output
    message: /error
    poll_interval: 0.2
    deadline: 4
"""

SUBSCRIPTIONS = """
subscriptions:
  - name: check
    on: [check.needed]
    run:
      service: datacheck
      params: {mode: "{{ payload.mode }}", db: "{{ dataset.name }}"}
"""


class DataCheck:
    """A job service with its own words: each run is ``incomplete``, then ``running``,
    then ends as its mode says (``ok``, ``fail``, ``weird``: a status nobody knows;
    ``hang``: running for ever)."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.ids = itertools.count(1)
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Reply:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return Reply(401, {"error": "no token"})
        if request.method == "POST" and request.path == "/runs":
            with self.lock:
                ref = f"r{next(self.ids)}"
                self.runs[ref] = {**request.json(), "looks": 0}
            return Reply(202, {"run": {"ref": ref}})
        ref = request.path.rpartition("/")[2]
        with self.lock:
            run = self.runs.get(ref)
            if run is None:
                return Reply(404, {"error": "no such run"})
            run["looks"] += 1
            looks, mode = run["looks"], run["mode"]
        if looks == 1 or mode == "hang":
            return Reply(200, {"state": "incomplete" if looks == 1 else "running"})
        if mode == "ok":
            return Reply(200, {"state": "complete", "output": {"checked": run["db"], "ok": 12}})
        if mode == "fail":
            return Reply(200, {"state": "failed", "error": "3 checks failed on " + run["db"]})
        return Reply(200, {"state": "dc-exploded"})


@pytest.fixture
def service() -> Iterator[tuple[Loopback, DataCheck]]:
    check = DataCheck()
    with Loopback(check) as server:
        yield server, check


@pytest.fixture
def runtime(
    request: pytest.FixtureRequest,
    home: Path,
    tmp_path: Path,
    service: tuple[Loopback, DataCheck],
    processes: Processes,
    monkeypatch: Any,
) -> Iterator[Runtime]:
    """RabbitMQ + PostgreSQL, the service in the services file, and an event worker
    (the event job and its remote_job both run on the event queue)."""
    server, _ = service
    monkeypatch.setenv("DC_TOKEN", TOKEN)  # the worker's environment has it too
    (tmp_path / "services.yaml").write_text(SERVICES.format(url=server.url()))
    (tmp_path / "subscriptions.yaml").write_text(SUBSCRIPTIONS)
    settings = stack_settings(
        home,
        "servers",
        request,
        services=tmp_path / "services.yaml",
        subscriptions=tmp_path / "subscriptions.yaml",
    )
    processes.worker(settings, queues=settings.queue_event, module="prodinf.event_tasks")
    rt = Runtime(settings, create_celery(settings))
    yield rt
    rt.close()
    delete_queues(settings)


def check(runtime: Runtime, mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Record a check.needed event in ``mode``; follow it to its end: (event job, process
    job)."""
    event, _ = record_event(
        runtime.store,
        runtime.registry,
        runtime.settings,
        runtime.publish,
        {"type": "check.needed", "dataset": "homo_sapiens_core_115_38", "payload": {"mode": mode}},
    )
    done = wait_for_job(runtime, event["job_id"], 60)
    proc = done["result"] or done["error"]["details"]
    job_id = proc["processes"]["check"]["job"]
    return done, runtime.store.describe(job_id)


def test_a_run_that_completes_succeeds_with_its_result(
    runtime: Runtime, service: tuple[Loopback, DataCheck]
) -> None:
    event, job = check(runtime, "ok")
    assert event["status"] == "succeeded", event["error"]
    assert job["kind"] == "remote_job" and job["status"] == "succeeded"
    assert job["result"]["status"] == "complete"
    assert job["result"]["result"] == {"checked": "homo_sapiens_core_115_38", "ok": 12}
    _, datacheck = service
    (run,) = datacheck.runs.values()
    assert run["key"] == job["id"] and run["looks"] >= 2  # incomplete, then complete


def test_a_failed_run_fails_the_process_with_what_the_service_said(runtime: Runtime) -> None:
    event, job = check(runtime, "fail")
    assert event["status"] == "failed"
    assert event["error"]["message"] == "event processes failed: check"
    assert job["status"] == "failed"
    assert job["error"]["message"] == (
        "datacheck job r1 failed: 3 checks failed on homo_sapiens_core_115_38"
    )


def test_an_unknown_status_fails_naming_it_and_the_known_ones(runtime: Runtime) -> None:
    _, job = check(runtime, "weird")
    assert job["status"] == "failed"
    message = job["error"]["message"]
    assert "'dc-exploded'" in message and "datacheck" in message
    assert "incomplete" in message and "complete" in message


def test_a_run_that_hangs_fails_once_the_deadline_passed(runtime: Runtime) -> None:
    _, job = check(runtime, "hang")
    assert job["status"] == "failed"
    assert job["error"]["message"] == ("datacheck job r1 still 'running' after its deadline of 4s")


def test_the_token_is_sent_and_shown_nowhere(
    runtime: Runtime, service: tuple[Loopback, DataCheck]
) -> None:
    event, job = check(runtime, "fail")
    server, _ = service
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in server.seen())
    assert TOKEN not in str(event) and TOKEN not in str(job)


def test_an_unreachable_service_is_tried_again_then_fails_at_its_deadline(
    runtime: Runtime, service: tuple[Loopback, DataCheck]
) -> None:
    server, _ = service
    server.close()
    _, job = check(runtime, "ok")
    assert job["status"] == "failed"
    assert "could not be reached within its deadline of 4s" in job["error"]["message"]
