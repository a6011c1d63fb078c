"""Fault injection for the integration tests, loaded by a worker through ``PRODINF_PLUGINS``.

A mock, used for the one fault a test cannot cause for real at the exact moment it
needs: a worker that dies *after* a side effect was done and recorded but *before*
its task was acknowledged. With ``PRODINF_TEST_PAUSE_AFTER_ONCE=<key>`` set, a step
that records ``<key>`` (``ctx.once(<key>, ...)`` or ``ctx.record(<key>, ...)``, as a
mail's delivery is) then stalls, holding its unacknowledged message, so the test can
SIGKILL the worker exactly there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from prodinf.engine.context import StepContext

T = TypeVar("T")

_KEY = os.environ.get("PRODINF_TEST_PAUSE_AFTER_ONCE")

if _KEY:
    _once = StepContext.once

    def _once_then_stall(self: StepContext, key: str, effect: Callable[[], T]) -> T:
        value: Any = _once(self, key, effect)
        if key == _KEY:
            time.sleep(600)
        return value  # type: ignore[no-any-return]

    StepContext.once = _once_then_stall  # type: ignore[method-assign]

    _record = StepContext.record

    def _record_then_stall(self: StepContext, key: str, value: Any) -> None:
        _record(self, key, value)
        if key == _KEY:
            time.sleep(600)

    StepContext.record = _record_then_stall  # type: ignore[method-assign]
