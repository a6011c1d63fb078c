"""The benchmark's kind: four steps that do nothing, so the ratio measures the engine."""

from __future__ import annotations

from prodinf import Flow, Step
from prodinf.engine.registry import NoParams, job_kind


def _noop(ctx: object) -> None:
    return None


@job_kind("bench_noop4", params=NoParams)
def bench_noop4(params: NoParams) -> Flow:
    """Four no-op steps in a line."""
    return Flow.of(*(Step(f"s{i}", _noop) for i in range(4)))
