"""Handovers on every store: one unfinished handover per database however many callers
race, and the copy slots of a staging server taken in submission order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import prodinf.kinds  # noqa: F401  (registers the handover kind)
from prodinf.engine.registry import registry
from prodinf.exceptions import Conflict
from prodinf.kinds.handover import Handovers
from prodinf.store.handovers import free_copy_slot, take_copy_slot
from prodinf.store.types import utcnow
from tests.contract.lab import at_once
from tests.sample_data import build_core_like
from tests.unit.test_handover import config
from tests.world import World


@pytest.fixture
def handovers(world: World, tmp_path: Path) -> Handovers:
    world.registry.register(registry.get("handover"))
    settings = world.settings.model_copy(
        update={"handover_config": config(tmp_path), "release": 115}
    )
    return Handovers(world.store, world.registry, settings, world.publish)


def database(tmp_path: Path, dataset: str) -> str:
    folder = tmp_path / "production"
    folder.mkdir(exist_ok=True)
    uri = f"sqlite:///{folder / dataset}_core_115_38.sqlite"
    build_core_like(uri, genes=5, release=115)
    return uri


def submit(handovers: Handovers, uri: str) -> Any:
    body = {"src_uri": uri, "contact": "ada@example.org", "comment": "race"}
    try:
        return handovers.submit(body)["token"]
    except Conflict as exc:
        return exc


def test_one_unfinished_handover_per_database_however_many_race(
    handovers: Handovers, tmp_path: Path
) -> None:
    uri = database(tmp_path, "homo_sapiens")
    results = at_once(8, lambda _: submit(handovers, uri))
    tokens = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(tokens) == 1 and len(refused) == 7
    assert {r.details["token"] for r in refused} == set(tokens)


def test_copy_slots_go_in_submission_order(
    handovers: Handovers, world: World, tmp_path: Path
) -> None:
    tokens = [submit(handovers, database(tmp_path, f"species{i}")) for i in range(5)]
    now = utcnow()
    with world.store.transaction() as conn:
        taken = [take_copy_slot(conn, t, 2, now)[0] for t in tokens]
    assert taken == [True, True, False, False, False]
    with world.store.transaction() as conn:
        # the last asks again: two are waiting before it
        assert take_copy_slot(conn, tokens[4], 2, now) == (False, 2, 2)
        assert free_copy_slot(conn, tokens[0], 2) == [tokens[2]]
    with world.store.transaction() as conn:
        assert take_copy_slot(conn, tokens[4], 2, now)[0] is False  # tokens[2] is first
        assert take_copy_slot(conn, tokens[2], 2, now)[0] is True
        assert free_copy_slot(conn, tokens[1], 2) == [tokens[3]]
