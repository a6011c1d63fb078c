"""Fixtures of the fast tier."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from prodinf.config import Settings
from tests.broker import Broker
from tests.world import World


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    """A fresh engine on a SQLite store under the test's home; ``publish`` records."""
    w = World(settings)
    yield w
    w.close()


@pytest.fixture
def broker(settings: Settings) -> Iterator[Broker]:
    """The embedded broker under the test's home, published to through prodinf's Runtime."""
    b = Broker(settings)
    yield b
    b.close()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record the ``prodinf`` loggers write, down to DEBUG (see tests/unit/leaks.py)."""
    caplog.set_level(logging.DEBUG, logger="prodinf")
    return caplog
