"""What the job page shows of each step's log: its latest attempt's newest lines."""

from __future__ import annotations

from typing import Any

from prodinf.status import StepStatus
from prodinf.store import JobStore
from prodinf.store.steplogs import latest_lines

__all__ = ["PAGE_LINES", "step_logs"]

#: Lines of each step the job page shows (the newest); the rest behind "Full log".
PAGE_LINES = 100
#: A step in one of these shows its log unfolded.
_OPEN = frozenset({StepStatus.RUNNING, StepStatus.FAILED, StepStatus.REVERT_FAILED})


def step_logs(store: JobStore, detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """By step name: ``attempt``, ``total`` lines, the newest ``lines`` (oldest first),
    and whether the page shows them ``open``; steps that logged nothing are absent."""
    logs = latest_lines(store, detail["id"], PAGE_LINES)
    for step in detail["steps"]:
        if step["name"] in logs:
            logs[step["name"]]["open"] = step["status"] in _OPEN
    return logs
