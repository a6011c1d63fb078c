"""Fixtures of the fast tier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prodinf.config import Settings
from tests.unit.world import World


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    """A fresh engine on a SQLite store under the test's home."""
    w = World(settings)
    yield w
    w.close()
