"""Fault injection for the handover tests, loaded by a handover worker through
``PRODINF_PLUGINS``.

A mock for a fault a test cannot cause for real at the instant it needs: the worker
SIGKILLed at a stage boundary. With ``PRODINF_TEST_DIE_AT_BOUNDARY`` naming a folder,
the first process to reach each boundary makes a marker file there and kills itself,
so the process that takes over runs on:

``<stage>.ended``
    the stage's job has ended and the stage, woken, has seen it: the stage's success
    (and the next stage's start) is not recorded yet;
``sent-1`` .. ``sent-3``
    the first three times the worker has committed new jobs (a stage's job it started,
    the notification of the end) and not sent their messages yet.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import prodinf.kinds.handover.kind as handover_kind
from prodinf.engine.messages import Messages


def _fire(name: str) -> None:
    folder = os.environ.get("PRODINF_TEST_DIE_AT_BOUNDARY")
    if not folder:
        return
    try:
        (Path(folder) / name).touch(exist_ok=False)
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


_ended = handover_kind._ended


def _die_then_end(ctx: Any, spec: Any, child: Any) -> Any:
    _fire(f"{spec.name}.ended")
    return _ended(ctx, spec, child)


_send_all = Messages.send_all


def _die_then_send(self: Messages, messages: Any) -> None:
    folder = os.environ.get("PRODINF_TEST_DIE_AT_BOUNDARY")
    if messages and folder:
        killed = len(list(Path(folder).glob("sent-*")))
        if killed < 3:
            _fire(f"sent-{killed + 1}")
    _send_all(self, messages)


handover_kind._ended = _die_then_end
Messages.send_all = _die_then_send  # type: ignore[method-assign]
