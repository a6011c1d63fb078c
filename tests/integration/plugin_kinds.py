"""Kinds for the integration tests, loaded by workers through ``PRODINF_PLUGINS``.

Each one records what it did in files the test reads, so the test can check
what a user would: how many times a side effect happened, in what order
steps were undone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic import BaseModel

from prodinf import Flow, Retry, Step
from prodinf.engine.context import StepContext
from prodinf.engine.registry import job_kind
from prodinf.exceptions import PermanentError, TransientError


def append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")


class EffectParams(BaseModel):
    effect_file: str
    sleep: float = 0.0


def _effect_then_sleep(ctx: StepContext) -> dict[str, str]:
    params: EffectParams = ctx.params  # type: ignore[assignment]
    ctx.once("write", lambda: append(params.effect_file, ctx.job_id) or "written")
    time.sleep(params.sleep)
    return {"effect": "written"}


@job_kind("it_effect", params=EffectParams)
def it_effect(params: EffectParams) -> Flow:
    """Write one line (a recorded side effect), sleep, then finish in a second step."""
    return Flow.of(Step("effect", _effect_then_sleep), Step("finish", lambda ctx: "done"))


class NoopParams(BaseModel):
    sleep: float = 0.0


def _noop(ctx: StepContext) -> int:
    params: NoopParams = ctx.params  # type: ignore[assignment]
    if params.sleep:
        time.sleep(params.sleep)
    return ctx.attempt


@job_kind("it_noop4", params=NoopParams)
def it_noop4(params: NoopParams) -> Flow:
    """Four steps that do nothing: the engine's own cost."""
    return Flow.of(*(Step(f"s{i}", _noop) for i in range(4)))


class RevertParams(BaseModel):
    log_file: str
    cause_file: str


def _make(name: str):  # type: ignore[no-untyped-def]
    def execute(ctx: StepContext) -> str:
        append(ctx.params.log_file, f"run {name}")  # type: ignore[attr-defined]
        return name

    def revert(ctx: StepContext) -> None:
        append(ctx.params.log_file, f"revert {name}")  # type: ignore[attr-defined]

    return execute, revert


def _needs_cause_fixed(ctx: StepContext) -> str:
    params: RevertParams = ctx.params  # type: ignore[assignment]
    append(params.log_file, "run check")
    if Path(params.cause_file).exists():
        raise PermanentError(f"bad input: {params.cause_file} exists")
    return "checked"


@job_kind("it_revert", params=RevertParams)
def it_revert(params: RevertParams) -> Flow:
    """prepare (no revert), copy and register (revertible), then check, which fails for
    good while cause_file exists."""
    steps = [Step("prepare", lambda ctx: append(ctx.params.log_file, "run prepare") or "ok")]
    for name in ("copy", "register"):
        execute, revert = _make(name)
        steps.append(Step(name, execute, revert=revert))
    steps.append(Step("check", _needs_cause_fixed, retry=Retry(attempts=1)))
    return Flow(steps)


class WaitThenParams(BaseModel):
    interval: float = 2.0
    looks: int = 3


def _wait_then(ctx: StepContext) -> dict[str, list[float]]:
    """Wait ``interval`` seconds ``looks`` times; record how late each wake-up came."""
    params: WaitThenParams = ctx.params  # type: ignore[assignment]
    late: list[float] = list(ctx.state.get("late", []))
    due = ctx.state.get("due")
    if due is not None:
        late.append(round(time.time() - float(due), 3))
    if len(late) >= params.looks:
        return {"late": late}
    return ctx.wait(params.interval, "waiting", late=late, due=time.time() + params.interval)  # type: ignore[return-value]


@job_kind("it_wait_then", params=WaitThenParams)
def it_wait_then(params: WaitThenParams) -> Flow:
    """A wait that comes due ``looks`` times, each wake-up's lateness in its result."""
    return Flow.of(Step("wait", _wait_then))


class LogsParams(BaseModel):
    rows: int = 3
    password: str = ""


def _copy_and_log(ctx: StepContext) -> int:
    """Log through ctx.log, a library's logger and print()."""
    params: LogsParams = ctx.params  # type: ignore[assignment]
    ctx.log.info("copied %d rows", params.rows)
    logging.getLogger("it_logs.driver").warning("logged in with password %s", params.password)
    print(f"printed: {params.rows} rows done")
    return params.rows


@job_kind("it_logs", params=LogsParams)
def it_logs(params: LogsParams) -> Flow:
    """One step that logs three ways (its lines are kept with the job)."""
    return Flow.of(Step("copy", _copy_and_log))


def _flaky(ctx: StepContext) -> int:
    if ctx.attempt == 1:
        raise TransientError("not yet: try again")
    return ctx.attempt


@job_kind("it_flaky", params=NoopParams)
def it_flaky(params: NoopParams) -> Flow:
    """One step that fails once (transiently) and succeeds when tried again."""
    return Flow.of(Step("call", _flaky, retry=Retry(attempts=3, backoff=0.2, jitter=0)))


def _refuse(ctx: StepContext) -> None:
    raise PermanentError("refused for good")


@job_kind("it_fail", params=NoopParams)
def it_fail(params: NoopParams) -> Flow:
    """One step that fails for good: the job fails."""
    return Flow.of(Step("check", _refuse))


def _busy_kind(queue: str) -> None:
    @job_kind(f"it_busy_{queue}", queue=queue, params=NoopParams)
    def busy(params: NoopParams) -> Flow:
        """One step that does nothing (or sleeps), on its own queue."""
        return Flow.of(Step("work", _noop))


for _queue in ("handover", "event", "email", "jobs"):
    _busy_kind(_queue)


class GatedParams(BaseModel):
    gates: str  # a folder: step ``name`` runs until the file ``<gates>/<name>`` exists
    timeout: float = 120.0


def _held(ctx: StepContext) -> str:
    """Run until the test opens this step's gate (creates its file); fail after timeout."""
    params: GatedParams = ctx.params  # type: ignore[assignment]
    gate = Path(params.gates) / ctx.step
    deadline = time.monotonic() + params.timeout
    while not gate.exists():
        if time.monotonic() > deadline:
            raise PermanentError(f"gate {gate} was never opened")
        time.sleep(0.005)
    return "let through"


@job_kind("it_gated", params=GatedParams)
def it_gated(params: GatedParams) -> Flow:
    """Two steps, ``first`` then ``second``, each running until the test opens its gate:
    a job a test holds at a step it picks."""
    return Flow.of(Step("first", _held), Step("second", _held))
