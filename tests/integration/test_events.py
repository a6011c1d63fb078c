"""Events handled by real workers on RabbitMQ + PostgreSQL: an event worker
(``celery -A prodinf.event_tasks worker``) starts the subscribed processes, a jobs
worker runs them, and each process's end wakes the event at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.kinds.event_record import record_event
from prodinf.runtime import Runtime
from tests.conftest import Processes
from tests.integration.conftest import PLUGIN, delete_queues, stack_settings
from tests.waiting import wait_for_job

pytestmark = pytest.mark.integration

FAULTS = "tests.integration.recovery_faults"

SUBSCRIPTIONS = """
subscriptions:
  - name: first
    on: [new_assembly]
    run: {kind: it_effect, params: {effect_file: "{{ payload.log }}", sleep: 0.5}}
  - name: second
    on: [new_assembly]
    run: {kind: it_effect, params: {effect_file: "{{ payload.log }}"}}
    after: [first]
  - name: third
    on: [new_assembly]
    run:
      kind: it_revert
      params: {log_file: "{{ payload.log }}.revert", cause_file: "{{ payload.cause }}"}
  - name: after-third
    on: [new_assembly]
    run: {kind: it_noop4}
    after: [third]
"""


@pytest.fixture
def events(request: pytest.FixtureRequest, home: Path, tmp_path: Path) -> Iterator[Settings]:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(SUBSCRIPTIONS)
    settings = stack_settings(
        home, "servers", request, subscriptions=path, plugins=[PLUGIN, FAULTS]
    )
    yield settings
    delete_queues(settings)


@pytest.fixture
def runtime(events: Settings) -> Iterator[Runtime]:
    """The submitting side (what the portal uses) for the events stack."""
    rt = Runtime(events, create_celery(events))
    yield rt
    rt.close()


def start_workers(processes: Processes, settings: Settings, **event_env: str) -> None:
    processes.worker(
        settings,
        queues=settings.queue_event,
        module="prodinf.event_tasks",
        name="event",
        extra_env=event_env,
    )
    processes.worker(settings, queues=settings.queue_jobs, name="jobs")


def all_succeed(runtime: Runtime, events: Settings, log: Path, tmp_path: Path) -> dict[str, Any]:
    """Record a new_assembly whose four processes will all succeed (no cause file)."""
    payload = {"log": str(log), "cause": str(tmp_path / "none")}
    event, _ = record_event(
        runtime.store,
        runtime.registry,
        events,
        runtime.publish,
        {"type": "new_assembly", "payload": payload},
    )
    return event


def when(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text)


def test_processes_run_in_order_once_each_and_a_failure_is_named(
    events: Settings, runtime: Runtime, processes: Processes, tmp_path: Path
) -> None:
    # Given an event worker, a jobs worker, and subscriptions where the second comes
    # after the first and the fourth after the third, which fails (its cause file exists)
    start_workers(processes, events)
    log, cause = tmp_path / "effects.txt", tmp_path / "cause"
    cause.write_text("bad input")

    # When an event matching all four is recorded
    event, created = record_event(
        runtime.store,
        runtime.registry,
        events,
        runtime.publish,
        {"type": "new_assembly", "payload": {"log": str(log), "cause": str(cause)}},
    )
    assert created

    # Then the event fails naming the failed process and the skipped one
    job = wait_for_job(runtime, event["job_id"], 120, logs=processes.logs)
    assert job["status"] == "failed", processes.logs()
    assert job["error"]["message"] == "event processes failed: third; skipped: after-third"

    # and the first and second each ran once, the second after the first had ended
    ran = job["error"]["details"]["processes"]
    first, second = (runtime.store.describe(ran[n]["job"]) for n in ("first", "second"))
    assert sorted(log.read_text().splitlines()) == sorted([first["id"], second["id"]])
    assert when(first["finished_at"]) <= when(second["created_at"])
    assert ran["after-third"]["job"] is None
    assert runtime.store.list_jobs(kind="it_noop4")[1] == 0


def test_each_end_wakes_the_event_at_once(
    events: Settings, runtime: Runtime, processes: Processes, tmp_path: Path
) -> None:
    # Given workers, and an event whose four processes all succeed
    start_workers(processes, events)
    log = tmp_path / "effects.txt"
    event = all_succeed(runtime, events, log, tmp_path)

    # When it runs to its end
    job = wait_for_job(runtime, event["job_id"], 120, logs=processes.logs)
    assert job["status"] == "succeeded", processes.logs()

    # Then it ended within a second of its last process (a wake-up, not a poll)
    ended = [runtime.store.describe(p["job"]) for p in job["result"]["processes"].values()]
    last = max(when(p["finished_at"]) for p in ended)
    took = (when(job["finished_at"]) - last).total_seconds()
    print(f"the event ended {took:.2f} s after its last process")
    assert took < 1.0


def test_a_worker_killed_after_starting_the_processes_starts_none_twice(
    events: Settings, runtime: Runtime, processes: Processes, tmp_path: Path
) -> None:
    # Given an event worker that dies after committing the processes it starts and
    # before sending their messages (a mock: PRODINF_TEST_DIE_BEFORE_PUBLISH), and
    # another event worker started after it died
    marker = tmp_path / "started"
    start_workers(processes, events, PRODINF_TEST_DIE_BEFORE_PUBLISH=str(marker))
    log = tmp_path / "effects.txt"
    event = all_succeed(runtime, events, log, tmp_path)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline, processes.logs()
        time.sleep(0.1)
    processes.worker(
        events, queues=events.queue_event, module="prodinf.event_tasks", name="event-2"
    )

    # When the event runs to its end
    job = wait_for_job(runtime, event["job_id"], 120, logs=processes.logs)

    # Then every process exists once and ran once
    assert job["status"] == "succeeded", processes.logs()
    kinds = [j["kind"] for j in runtime.store.list_jobs()[0] if j["kind"] != "event"]
    assert sorted(kinds) == ["it_effect", "it_effect", "it_noop4", "it_revert"]
    assert len(log.read_text().splitlines()) == 2
