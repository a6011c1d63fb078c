"""Fault injection for the recovery tests, loaded by a worker or the portal through
``PRODINF_PLUGINS``.

Mocks, each for a fault a test cannot cause for real at the exact instant it needs:
a process SIGKILLed between two lines of prodinf. Each hook is armed by an
environment variable naming a marker file, and fires once: the first process to
reach the point creates the file and kills itself, so the process that takes over
runs on unharmed.

``PRODINF_TEST_DIE_AFTER_CLAIM``
    The reconciler has claimed due jobs (committed ``next_run_at``) and not yet
    published them.
``PRODINF_TEST_DIE_BEFORE_PUBLISH``
    A new job is committed and its message not yet sent (the portal, mid-submission;
    a worker, with the children a step started or the parent a child's end woke).
``PRODINF_TEST_DIE_BEFORE_RECORD``
    The SMTP server has accepted a mail and the delivery is not yet recorded.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prodinf.engine.reconciler as reconciler
from prodinf.engine.context import StepContext
from prodinf.engine.messages import Messages


def _fire(variable: str) -> None:
    """SIGKILL this process if ``variable`` names a marker file not made yet."""
    marker = os.environ.get(variable)
    if not marker:
        return
    try:
        Path(marker).touch(exist_ok=False)
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


_claim_due: Callable[..., list[tuple[str, str]]] = reconciler.claim_due


def _claim_then_die(*args: Any, **kwargs: Any) -> list[tuple[str, str]]:
    claimed = _claim_due(*args, **kwargs)
    if claimed:
        _fire("PRODINF_TEST_DIE_AFTER_CLAIM")
    return claimed


_send = Messages.send


def _die_then_send(self: Messages, job_id: str, queue: str, marked: Any) -> None:
    _fire("PRODINF_TEST_DIE_BEFORE_PUBLISH")
    _send(self, job_id, queue, marked)


_send_all = Messages.send_all


def _die_then_send_all(self: Messages, messages: Any) -> None:
    if messages:
        _fire("PRODINF_TEST_DIE_BEFORE_PUBLISH")
    _send_all(self, messages)


_record = StepContext.record


def _die_then_record(self: StepContext[Any], key: str, value: Any) -> None:
    if key == "delivered":
        _fire("PRODINF_TEST_DIE_BEFORE_RECORD")
    _record(self, key, value)


reconciler.claim_due = _claim_then_die  # type: ignore[assignment]
Messages.send = _die_then_send  # type: ignore[method-assign]
Messages.send_all = _die_then_send_all  # type: ignore[method-assign]
StepContext.record = _die_then_record  # type: ignore[method-assign]
