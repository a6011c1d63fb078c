"""Fixtures of the contract tier: every test runs once per backend (SQLite, PostgreSQL,
MariaDB) on a freshly migrated store (``any_store``, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prodinf.config import Settings
from prodinf.store import JobStore
from tests.contract.lab import Lab, register_kinds
from tests.world import World


@pytest.fixture
def lab() -> Lab:
    """What the test kinds did, and the faults they are told to have."""
    return Lab()


@pytest.fixture
def world(any_store: JobStore, settings: Settings, lab: Lab) -> Iterator[World]:
    """The engine on one backend's store, with the test kinds of tests/contract/lab.py."""
    w = World(settings, store=any_store)
    register_kinds(w.registry, lab)
    yield w
    w.close()
