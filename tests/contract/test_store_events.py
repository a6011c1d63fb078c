"""Events on every store: recorded with their job in one transaction, read back and
filtered, one per idempotency key however many callers race."""

from __future__ import annotations

from pathlib import Path

import prodinf.kinds  # noqa: F401  (registers the event kind)
from prodinf.engine.registry import registry
from prodinf.kinds.event import record_event
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
        "queued",
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
