"""Where events come from, and how repeated ones coalesce, on RabbitMQ + PostgreSQL with
real workers: ``register_metadata`` records the events a changed database implies in
the transaction that finishes its step, and their processes run; five
``dataset.updated`` events for one dataset inside a coalescing window start one run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.kinds.event_record import record_event
from prodinf.runtime import Runtime
from prodinf.store.events import get_event, list_events
from tests.conftest import Processes
from tests.integration.conftest import PLUGIN, delete_queues, stack_settings
from tests.integration.core_faults import PASSWORD, core_named, execute
from tests.integration.datasets import Datasets
from tests.waiting import wait_for_job

pytestmark = pytest.mark.integration

SUBSCRIPTIONS = """
subscriptions:
  - name: note-update
    on: [dataset.updated]
    where: {{type: core}}
    run: {{kind: it_effect, params: {{effect_file: "{log}/updated.txt"}}}}
  - name: note-assembly
    on: [new_assembly]
    where: {{dataset: "*_core_*"}}
    run:
      kind: it_effect
      params: {{effect_file: "{log}/assembly-{{{{ payload.meta['assembly.default'].after }}}}.txt"}}
  - name: dump
    on: [dump.needed]
    coalesce: {{key: "{{{{ dataset.name }}}}", window: 4}}
    run: {{kind: it_effect, params: {{effect_file: "{log}/dumps.txt"}}}}
"""


@pytest.fixture
def settings(request: pytest.FixtureRequest, home: Path, tmp_path: Path) -> Iterator[Settings]:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(SUBSCRIPTIONS.format(log=tmp_path))
    found = stack_settings(home, "servers", request, subscriptions=path, plugins=[PLUGIN])
    yield found
    delete_queues(found)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings, create_celery(settings))
    yield rt
    rt.close()


def start_workers(processes: Processes, settings: Settings) -> None:
    processes.worker(settings, queues=settings.queue_event, module="prodinf.event_tasks")
    processes.worker(settings, queues=settings.queue_jobs, name="jobs")


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def register(runtime: Runtime, uri: str, processes: Processes) -> dict[str, Any]:
    summary, _ = runtime.jobs.submit("register_metadata", {"database_uri": uri})
    job = wait_for_job(runtime, summary["id"], 120, logs=processes.logs)
    assert job["status"] == "succeeded", job["error"]
    return job


def test_register_metadata_records_its_events_and_their_processes_run(
    settings: Settings,
    runtime: Runtime,
    processes: Processes,
    datasets: Datasets,
    tmp_path: Path,
) -> None:
    # Given workers, and a core database registered once (dataset.created: nobody
    # subscribes to it, so its event succeeds at once, saying so)
    start_workers(processes, settings)
    uri, _ = core_named(datasets, "postgresql", genes=50)
    name = uri.rpartition("/")[2]
    first = register(runtime, uri, processes)
    (created,) = first["result"]["events"]
    event = get_event(runtime.store, created["event_id"])
    assert event is not None and event["type"] == "dataset.created"
    assert event["dataset"] == name and event["source"] == f"job {first['id']}"
    assert event["attributes"]["type"] == "core"
    assert event["attributes"]["release"] == 115
    done = wait_for_job(runtime, event["job_id"], 60, logs=processes.logs)
    assert done["result"]["message"] == "no subscription matches this event"

    # When the database changes (rows and its assembly) and is registered again
    execute(
        uri,
        "UPDATE gene SET biotype = 'lncRNA' WHERE gene_id <= 5",
        "UPDATE meta SET meta_value = 'GRCh39' WHERE meta_key = 'assembly.default'",
    )
    second = register(runtime, uri, processes)

    # Then its result names the two events it recorded, each pointing back at the job
    found = {e["type"]: e["event_id"] for e in second["result"]["events"]}
    assert sorted(found) == ["dataset.updated", "new_assembly"]
    recorded, total = list_events(runtime.store, dataset=name)
    assert total == 3
    assert {e["id"] for e in recorded} >= set(found.values())
    for event_id in found.values():
        event = get_event(runtime.store, event_id)
        assert event is not None and event["source"] == f"job {second['id']}"
        # and the processes they start run, each once
        handled = wait_for_job(runtime, event["job_id"], 120, logs=processes.logs)
        assert handled["status"] == "succeeded", handled["error"]
    assert len(lines(tmp_path / "updated.txt")) == 1
    assert len(lines(tmp_path / "assembly-GRCh39.txt")) == 1
    # and the payload a subscription reads carries the database, masked wherever shown
    shown = get_event(runtime.store, found["dataset.updated"])
    assert shown is not None and PASSWORD not in str(shown)
    assert shown["payload"]["tables"]["changed"] == ["gene", "meta"]


def test_five_updates_in_the_window_start_one_run_and_point_at_it(
    settings: Settings, runtime: Runtime, processes: Processes, tmp_path: Path
) -> None:
    # Given workers and a subscription that coalesces by dataset for 4 seconds
    start_workers(processes, settings)

    # When five events for one dataset (and one for another) are recorded within it
    def event(dataset: str) -> dict[str, Any]:
        found, created = record_event(
            runtime.store,
            runtime.registry,
            settings,
            runtime.publish,
            {"type": "dump.needed", "dataset": dataset},
        )
        assert created
        return found

    five = [event("homo_sapiens_core_115_38") for _ in range(5)]
    other = event("mus_musculus_core_115_39")

    # Then the first opened the window and the four later ones point at it, saying so
    (opened,) = five[0]["processes"]
    assert opened["start_at"] is not None and opened["coalesced_into"] is None
    for later in five[1:]:
        (proc,) = later["processes"]
        assert proc["coalesced_into"] == {"event": five[0]["id"], "job": five[0]["job_id"]}
        assert proc["start_at"] is None

    # and once the window closed, one run did the work for the five, one for the other
    jobs = [wait_for_job(runtime, e["job_id"], 120, logs=processes.logs) for e in five]
    assert all(j["status"] == "succeeded" for j in jobs), [j["error"] for j in jobs]
    wait_for_job(runtime, other["job_id"], 60, logs=processes.logs)
    assert len(lines(tmp_path / "dumps.txt")) == 2
    run = jobs[0]["result"]["processes"]["dump"]["job"]
    for later in jobs[1:]:
        assert later["result"]["processes"]["dump"]["job"] == run
        assert later["result"]["processes"]["dump"]["coalesced_into"]["event"] == five[0]["id"]
    started = runtime.store.describe(run)["created_at"]
    assert started >= opened["start_at"]
