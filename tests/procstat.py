"""What a process tree uses, read from /proc: resident memory and CPU time of a worker
and its prefork pool (for the tests and benchmarks that bound them)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["tree_cpu", "tree_pids", "tree_rss"]


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its children (the prefork pool)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(c) for c in children)]


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its children."""
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its children (the pool)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            pass
    return total
