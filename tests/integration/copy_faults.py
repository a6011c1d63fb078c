"""Fault injection for the copy tests, loaded by a worker through ``PRODINF_PLUGINS``.

A real worker is SIGKILLed mid-copy; this only chooses the moment. With
``PRODINF_TEST_PAUSE_COPY=<table>:<batch>:<marker file>`` set, the copy of
``<table>`` stalls with its ``<batch>``-th batch written to the target but not
committed, after creating the marker file, so the test knows when to kill.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prodinf.databases import transfer

_SPEC = os.environ.get("PRODINF_TEST_PAUSE_COPY")

if _SPEC:
    _table, _batch, _marker = _SPEC.split(":", 2)

    def _stall(table: str, batch: int) -> None:
        if table == _table and batch == int(_batch):
            Path(_marker).write_text(f"{os.getpid()}\n")
            time.sleep(600)

    transfer.before_commit = _stall
