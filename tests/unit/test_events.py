"""Events on a real SQLite store: recorded with their job, processes started per
subscription (``after`` as a graph), each once, the event's end naming what failed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import prodinf.kinds  # noqa: F401  (registers the event kind)
from prodinf import Step, StepContext
from prodinf.config import Settings
from prodinf.engine.registry import registry
from prodinf.exceptions import BrokerUnavailable, PermanentError, ValidationError
from prodinf.kinds.event_record import record_event
from prodinf.store.events import list_events
from tests.broker import Broker
from tests.unit.workers import fail_for_good
from tests.world import World

SUBSCRIPTIONS = """
subscriptions:
  - name: first
    on: ["new_*"]
    run: {kind: ok, params: {value: "{{ dataset.release }}"}}
  - name: second
    on: [new_assembly]
    run: {kind: ok, params: {value: 2}}
    after: [first]
  - name: third
    on: [new_assembly]
    where: {type: core}
    run: {kind: "{{ 'boom' }}", params: {}}
  - name: broken
    on: [new_genebuild]
    run: {kind: ok, params: {value: "{{ payload.missing }}"}}
  - name: mistyped
    on: [new_genebuild]
    run: {kind: ok, params: {value: "not a number"}}
"""


class Value(BaseModel):
    value: int


@pytest.fixture
def events(tmp_path: Path, settings: Settings) -> Iterator[World]:
    """A world whose subscriptions are SUBSCRIPTIONS, with the kinds they run."""
    path = tmp_path / "subscriptions.yaml"
    path.write_text(SUBSCRIPTIONS.replace("\"{{ 'boom' }}\"", "boom"))
    w = World(settings.model_copy(update={"subscriptions": path}))
    w.registry.register(registry.get("event"))
    w.linear("ok", Step("ok", lambda ctx: ctx.params.value), params=Value)
    w.linear("boom", Step("boom", fail_for_good))
    yield w
    w.close()


def record(world: World, **document: Any) -> dict[str, Any]:
    shown, _ = record_event(world.store, world.registry, world.settings, world.publish, document)
    return shown


def run_all(world: World, event: dict[str, Any]) -> dict[str, Any]:
    """Drive the event's job and every child it starts until nothing moves."""
    for _ in range(10):
        world.drive(event["job_id"])
        pending = [j for j in world.store.list_jobs()[0] if j["status"] == "queued"]
        if not pending:
            break
        for job in pending:
            world.drive(job["id"])
    return world.describe(event["job_id"])


def test_processes_run_in_order_once_each_and_the_event_names_what_failed(
    events: World,
) -> None:
    # Given an event three subscriptions match, the second after the first
    event = record(events, type="new_assembly", dataset="homo_sapiens_core_115_38")
    assert [p["subscription"] for p in event["processes"]] == ["first", "second", "third"]

    # When its job and the jobs it starts run
    job = run_all(events, event)

    # Then each process ran once (the first with params rendered from the event), the
    # second after the first, and the event failed naming the one that failed
    ran = {j["kind"]: j for j in events.store.list_jobs()[0] if j["kind"] != "event"}
    assert sorted(j["kind"] for j in events.store.list_jobs()[0]) == ["boom", "event", "ok", "ok"]
    oks = [events.describe(j["id"]) for j in events.store.list_jobs(kind="ok")[0]]
    assert sorted(o["result"] for o in oks) == [2, 115]
    first = next(o for o in oks if o["result"] == 115)
    second = next(o for o in oks if o["result"] == 2)
    assert first["finished_at"] <= second["created_at"]
    assert ran["boom"]["status"] == "failed"
    assert job["status"] == "failed"
    assert job["error"]["message"] == "event processes failed: third"
    assert job["error"]["details"]["processes"]["second"]["status"] == "succeeded"


def test_a_failed_process_skips_those_after_it(events: World, tmp_path: Path) -> None:
    # Given subscriptions where the second comes after one that fails
    path = tmp_path / "after-boom.yaml"
    path.write_text(
        "subscriptions:\n"
        "  - {name: a, on: [x], run: {kind: boom}}\n"
        "  - {name: b, on: [x], run: {kind: ok, params: {value: 1}}, after: [a]}\n"
    )
    events.settings = events.settings.model_copy(update={"subscriptions": path})
    event = record(events, type="x")

    # When it runs, the event fails naming the failed one and the skipped one
    job = run_all(events, event)
    assert job["error"]["message"] == "event processes failed: a; skipped: b"
    assert events.store.list_jobs(kind="ok")[1] == 0


def test_an_event_nobody_subscribes_to_succeeds_saying_so(events: World) -> None:
    # When an event nobody subscribes to is recorded
    events.published.clear()
    event = record(events, type="nobody.cares")

    # Then its job has succeeded already, saying so, with no message and no run
    assert (event["processes"], event["status"]) == ([], "succeeded")
    assert events.published == []
    job = events.describe(event["job_id"])
    assert job["status"] == "succeeded"
    assert job["result"]["message"] == "no subscription matches this event"
    assert [h["event"] for h in job["history"]] == [
        "job.submitted",
        "step.succeeded",
        "job.succeeded",
    ]


def test_a_process_that_does_not_render_or_validate_fails_named_and_others_run(
    events: World,
) -> None:
    # When an event matches one subscription whose template reads a missing field and
    # one whose rendered params do not validate, plus one that is fine
    event = record(
        events, type="new_genebuild", dataset="homo_sapiens_core_115_38", payload={"x": 1}
    )

    # Then both are refused at once, naming the subscription's field, the third runs
    processes = {p["subscription"]: p for p in event["processes"]}
    assert "params.value" in processes["broken"]["error"]
    assert "params.value" in processes["mistyped"]["error"]
    assert processes["first"]["error"] is None
    job = run_all(events, event)
    assert job["error"]["message"] == "event processes failed: broken, mistyped"
    assert [j["status"] for j in events.store.list_jobs(kind="ok")[0]] == ["succeeded"]


def test_a_repeated_idempotency_key_records_one_event(events: World) -> None:
    first, created = record_event(
        events.store,
        events.registry,
        events.settings,
        events.publish,
        {"type": "x.y", "idempotency_key": "ev-1"},
    )
    again, created_again = record_event(
        events.store,
        events.registry,
        events.settings,
        events.publish,
        {"type": "x.y", "idempotency_key": "ev-1"},
    )
    assert (created, created_again) == (True, False)
    assert again["id"] == first["id"]
    assert list_events(events.store)[1] == 1


@pytest.mark.parametrize(
    "subscriptions",
    [
        # the event's job is queued, to start its processes
        "  - {name: a, on: [x], run: {kind: ok, params: {value: 1}}}\n"
        "  - {name: b, on: [x], run: {kind: ok, params: {value: 2}}, after: [a]}\n",
        # its processes are started with it
        "  - {name: a, on: [x], run: {kind: ok, params: {value: 1}}}\n",
    ],
    ids=["queued", "started"],
)
def test_an_event_whose_messages_cannot_be_sent_is_not_kept(
    settings: Settings, broker: Broker, tmp_path: Path, subscriptions: str
) -> None:
    path = tmp_path / "subscriptions.yaml"
    path.write_text("subscriptions:\n" + subscriptions)
    world = World(settings.model_copy(update={"subscriptions": path}), publish=broker.publish)
    world.registry.register(registry.get("event"))
    world.linear("ok", Step("ok", lambda ctx: ctx.params.value), params=Value)
    with broker.down(), pytest.raises(BrokerUnavailable):
        record(world, type="x")
    assert list_events(world.store)[1] == 0
    assert world.store.list_jobs()[1] == 0
    world.close()


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({}, "type"),
        ({"type": " x"}, "type"),
        ({"type": "x", "payload": [1]}, "payload"),
        ({"type": "x", "dataset": 7}, "dataset"),
        ({"type": "x", "colour": "red"}, "colour"),
        ({"type": "x", "idempotency_key": ""}, "idempotency_key"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    events: World, document: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        record(events, **document)
    assert caught.value.field == field
    assert list_events(events.store)[1] == 0


def test_the_dataset_is_read_by_the_naming_rules(events: World) -> None:
    event = record(events, type="nothing", dataset="homo_sapiens_core_115_38")
    assert event["attributes"]["type"] == "core"
    assert event["attributes"]["release"] == 115
    assert list_events(events.store, dataset="homo_sapiens_core_115_38")[1] == 1


def test_retry_runs_only_the_failed_and_skipped_processes(events: World, tmp_path: Path) -> None:
    # Given an event whose first process fails while a cause file exists, a second
    # that comes after it, and a third that succeeds
    cause = tmp_path / "cause"
    cause.write_text("bad")
    path = tmp_path / "retry.yaml"
    path.write_text(
        "subscriptions:\n"
        "  - {name: a, on: [x], run: {kind: picky, params: {cause: '{{ payload.cause }}'}}}\n"
        "  - {name: b, on: [x], run: {kind: ok, params: {value: 2}}, after: [a]}\n"
        "  - {name: c, on: [x], run: {kind: ok, params: {value: 3}}}\n"
    )
    events.settings = events.settings.model_copy(update={"subscriptions": path})
    events.linear("picky", Step("picky", picky), params=Cause)
    event = record(events, type="x", payload={"cause": str(cause)})
    assert run_all(events, event)["error"]["message"] == "event processes failed: a; skipped: b"

    # When the cause is fixed and the event retried
    cause.unlink()
    events.jobs.retry(event["job_id"])
    job = run_all(events, event)

    # Then it succeeds, having run a and b again and c only once
    assert job["status"] == "succeeded"
    kinds = sorted(j["kind"] for j in events.store.list_jobs()[0] if j["kind"] != "event")
    assert kinds == ["ok", "ok", "picky", "picky"]
    assert {p["status"] for p in job["result"]["processes"].values()} == {"succeeded"}


def test_cancelling_an_event_cancels_its_running_processes(events: World) -> None:
    # Given an event whose processes are running
    event = record(events, type="new_assembly", dataset="homo_sapiens_core_115_38")
    events.drive(event["job_id"])
    started = [j["id"] for j in events.store.list_jobs()[0] if j["kind"] != "event"]
    assert started

    # When the event is cancelled, so are they
    events.jobs.cancel(event["job_id"])
    assert {events.describe(j)["status"] for j in started} == {"cancelled"}
    assert events.describe(event["job_id"])["status"] == "cancelled"


class Cause(BaseModel):
    cause: str


def picky(ctx: StepContext) -> str:
    if Path(ctx.params.cause).exists():
        raise PermanentError(f"{ctx.params.cause} exists")
    return "fine"


def test_a_process_runs_on_the_queue_its_subscription_names(events: World, tmp_path: Path) -> None:
    path = tmp_path / "queue.yaml"
    path.write_text(
        "subscriptions:\n"
        "  - {name: big, on: [x], run: {kind: ok, params: {value: 1}}, queue: bigmem}\n"
    )
    events.settings = events.settings.model_copy(update={"subscriptions": path})
    event = record(events, type="x")
    events.drive(event["job_id"])
    (child,) = [j for j in events.store.list_jobs()[0] if j["kind"] == "ok"]
    assert events.describe(child["id"])["queue"] == "bigmem"
    assert (child["id"], "bigmem") in events.published


def test_coalesced_events_follow_the_run_and_a_retry_runs_their_own(
    events: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a subscription coalescing by dataset for 0.6 s (room for three recordings on
    # a loaded machine), whose kind
    # fails while a cause file exists (and followers looking at the run every 50 ms,
    # not every 5 s)
    monkeypatch.setattr("prodinf.kinds.event.FOLLOW_EVERY", 0.05)
    cause = tmp_path / "cause"
    cause.write_text("bad")
    path = tmp_path / "coalesce.yaml"
    path.write_text(
        "subscriptions:\n"
        "  - name: dump\n"
        "    on: [x]\n"
        "    run: {kind: picky, params: {cause: '{{ payload.cause }}'}}\n"
        "    coalesce: {key: '{{ dataset.name }}', window: 0.6}\n"
    )
    events.settings = events.settings.model_copy(update={"subscriptions": path})
    events.linear("picky", Step("picky", picky), params=Cause)

    # When three events for one dataset are recorded inside the window
    three = [
        record(events, type="x", dataset="homo_sapiens_core_115_38", payload={"cause": str(cause)})
        for _ in range(3)
    ]

    # Then none starts before the window closes
    for event in three:
        events.drive(event["job_id"])
    assert [j for j in events.store.list_jobs()[0] if j["kind"] == "picky"] == []

    # and after it, one run does it for all three, and its failure is theirs
    time.sleep(0.65)
    run_all(events, three[0])
    time.sleep(0.1)
    ended = [run_all(events, e) for e in three]
    runs = [j for j in events.store.list_jobs()[0] if j["kind"] == "picky"]
    assert len(runs) == 1
    for job in ended:
        assert job["status"] == "failed"
        assert job["error"]["message"] == "event processes failed: dump"
        assert job["error"]["details"]["processes"]["dump"]["job"] == runs[0]["id"]

    # When the cause is fixed and a later event is retried, it runs the process itself
    cause.unlink()
    events.jobs.retry(three[2]["job_id"])
    job = run_all(events, three[2])
    assert job["status"] == "succeeded", job["error"]
    assert len([j for j in events.store.list_jobs()[0] if j["kind"] == "picky"]) == 2


def test_processes_that_can_all_start_are_started_with_the_event(
    events: World, tmp_path: Path
) -> None:
    # Given two subscriptions with no ``after``, no coalescing
    path = tmp_path / "now.yaml"
    path.write_text(
        "subscriptions:\n"
        "  - {name: one, on: [x], run: {kind: ok, params: {value: 1}}}\n"
        "  - {name: two, on: [x], run: {kind: ok, params: {value: 2}}}\n"
    )
    events.settings = events.settings.model_copy(update={"subscriptions": path})
    events.published.clear()

    # When an event is recorded
    event = record(events, type="x")

    # Then its two processes were started in its transaction, their messages sent (not
    # the event job's), and its job waits for the last of them
    started = [j["id"] for j in events.store.list_jobs()[0] if j["kind"] == "ok"]
    assert sorted(events.published) == sorted((i, "jobs") for i in started)
    job = events.describe(event["job_id"])
    assert (event["status"], job["status"]) == ("waiting", "waiting")
    assert [h["event"] for h in job["history"]].count("child.started") == 2

    # When the first ends nothing wakes it; when the last ends it runs, and succeeds
    events.published.clear()
    events.drive(started[0])
    assert (event["job_id"], "event.due") not in events.published
    events.drive(started[1])
    assert (event["job_id"], "event.due") in events.published
    assert events.drive(event["job_id"])["status"] == "succeeded"
