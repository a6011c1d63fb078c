"""Events on every store: recorded with their job in one transaction, read back and
filtered, one per idempotency key however many callers race."""

from __future__ import annotations

from pathlib import Path

import prodinf.kinds  # noqa: F401  (registers the event kind)
from prodinf import Step
from prodinf.engine.registry import registry
from prodinf.kinds.event_record import record_event
from prodinf.store.events import get_event, list_events
from tests.contract.lab import at_once
from tests.world import World


def test_events_are_recorded_read_back_and_filtered(world: World, tmp_path: Path) -> None:
    # Given an event kind and no subscriber
    world.registry.register(registry.get("event"))
    nobody = tmp_path / "subscriptions.yaml"
    nobody.write_text("subscriptions: []\n")
    settings = world.settings.model_copy(update={"subscriptions": nobody})

    # When two events are recorded, one with a dataset and a unicode payload
    first, _ = record_event(
        world.store,
        world.registry,
        settings,
        world.publish,
        {"type": "new_assembly", "dataset": "homo_sapiens_core_115_38", "payload": {"é": [1]}},
    )
    record_event(world.store, world.registry, settings, world.publish, {"type": "other"})

    # Then each reads back as recorded, with its job's status, and filters select them
    found = get_event(world.store, first["id"])
    assert found is not None
    assert (found["type"], found["payload"], found["status"]) == (
        "new_assembly",
        {"é": [1]},
        "succeeded",  # nobody subscribes: its job is done as it is recorded
    )
    assert found["attributes"]["release"] == 115
    assert list_events(world.store)[1] == 2
    assert [e["id"] for e in list_events(world.store, type="new_assembly")[0]] == [first["id"]]
    assert list_events(world.store, dataset="nope")[1] == 0


def test_one_event_per_key_however_many_callers_race(world: World, tmp_path: Path) -> None:
    world.registry.register(registry.get("event"))
    nobody = tmp_path / "subscriptions.yaml"
    nobody.write_text("subscriptions: []\n")
    settings = world.settings.model_copy(update={"subscriptions": nobody})

    results = at_once(
        6,
        lambda i: record_event(
            world.store,
            world.registry,
            settings,
            world.publish,
            {"type": "x", "idempotency_key": "race"},
        ),
    )

    assert len({shown["id"] for shown, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert list_events(world.store)[1] == 1


def test_events_racing_into_one_coalescing_window_open_it_once(
    world: World, tmp_path: Path
) -> None:
    # Given a subscription coalescing by dataset for a minute
    world.registry.register(registry.get("event"))
    world.linear("ok", Step("ok", lambda ctx: 1))
    path = tmp_path / "subscriptions.yaml"
    path.write_text(
        "subscriptions:\n"
        "  - name: dump\n"
        "    on: [x]\n"
        "    run: {kind: ok}\n"
        "    coalesce: {key: '{{ dataset.name }}', window: 60}\n"
    )
    settings = world.settings.model_copy(update={"subscriptions": path})

    # When six events for one dataset are recorded at the same moment
    results = at_once(
        6,
        lambda i: record_event(
            world.store,
            world.registry,
            settings,
            world.publish,
            {"type": "x", "dataset": "homo_sapiens_core_115_38"},
        ),
    )

    # Then exactly one opened the window and the other five point at it
    processes = [shown["processes"][0] for shown, _ in results]
    owners = [shown for shown, _ in results if shown["processes"][0]["start_at"]]
    assert len(owners) == 1
    followers = [p["coalesced_into"] for p in processes if p["coalesced_into"]]
    assert followers == [{"event": owners[0]["id"], "job": owners[0]["job_id"]}] * 5
    assert list_events(world.store)[1] == 6
