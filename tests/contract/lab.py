"""The contract tier's test kinds and what they did (the ``Lab``), and two helpers.

Kinds: ``plain`` (a -> b -> c), ``undoable`` (a..d, each with a revert),
``fanout`` (p1, p2, p3 in parallel, then join; on the handover queue), ``gated``
(hold until the test opens the gate, then after), ``not_json`` (an output JSON
cannot carry) and ``watcher`` (waits on a shared URL watch). Every kind's params
are ``{"payload": <any JSON>}``, carried through to its steps' outputs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from prodinf import Flow, Retry, Step, Watch
from prodinf.engine.registry import Registry, job_kind
from prodinf.exceptions import PermanentError

__all__ = ["Lab", "Payload", "WorkerDied", "at_once", "parse", "register_kinds"]

T = TypeVar("T")


class Payload(BaseModel):
    """Params of every test kind: any JSON, carried through to the result."""

    model_config = ConfigDict(extra="forbid")

    payload: Any = None


class WorkerDied(BaseException):
    """Raised inside a step to stop its runner dead, as a killed worker would."""


@dataclass
class Lab:
    """What the test kinds did, and the outside world they depend on."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: (job id, "run" or "revert", step) in the order they happened.
    log: list[tuple[str, str, str]] = field(default_factory=list)
    #: Steps that fail permanently while listed here.
    broken: set[str] = field(default_factory=set)
    #: Steps that kill their runner (once) while listed here.
    crash: set[str] = field(default_factory=set)
    #: Seconds each step takes.
    delay: float = 0.0
    #: The "hold" step of the gated kind runs until this is set.
    gate: threading.Event = field(default_factory=threading.Event)
    #: What happens in the outside world while a step runs: called with its job's id.
    during: dict[str, Callable[[str], None]] = field(default_factory=dict)

    def record(self, job_id: str, action: str, step: str) -> None:
        with self.lock:
            self.log.append((job_id, action, step))

    def done(self, job_id: str) -> list[tuple[str, str]]:
        with self.lock:
            return [(action, step) for j, action, step in self.log if j == job_id]

    def count(self, job_id: str, action: str, step: str) -> int:
        return self.done(job_id).count((action, step))


def register_kinds(reg: Registry, lab: Lab) -> None:
    """Register the test kinds into ``reg``; what they do is recorded in ``lab``."""

    def step(name: str, *, revert: bool = False, after: tuple[str, ...] | None = None) -> Step:
        def execute(ctx: Any) -> Any:
            lab.record(ctx.job_id, "run", name)
            if name in lab.during:
                lab.during[name](ctx.job_id)
            if lab.delay:
                time.sleep(lab.delay)
            if name in lab.crash:
                lab.crash.discard(name)
                raise WorkerDied(name)
            if name in lab.broken:
                raise PermanentError(f"{name} is broken")
            return {"step": name, "after": sorted(ctx.outputs), "payload": ctx.params.payload}

        def undo(ctx: Any) -> None:
            lab.record(ctx.job_id, "revert", name)

        return Step(
            name, execute, revert=undo if revert else None, after=after, retry=Retry(attempts=1)
        )

    @job_kind("plain", params=Payload, into=reg)
    def plain(params: Payload) -> Flow:
        """a -> b -> c, nothing to undo."""
        return Flow.of(step("a"), step("b"), step("c"))

    @job_kind("undoable", params=Payload, into=reg)
    def undoable(params: Payload) -> Flow:
        """a -> b -> c -> d, each undone when a later step fails for good."""
        return Flow.of(*(step(name, revert=True) for name in "abcd"))

    @job_kind("fanout", queue="handover", params=Payload, into=reg)
    def fanout(params: Payload) -> Flow:
        """p1, p2, p3 in parallel, then join."""
        return Flow.of(
            step("p1", after=()),
            step("p2", after=()),
            step("p3", after=()),
            step("join", after=("p1", "p2", "p3")),
        )

    def hold(ctx: Any) -> str:
        lab.record(ctx.job_id, "run", "hold")
        assert lab.gate.wait(timeout=20), "the test never opened the gate"
        return "held"

    @job_kind("gated", params=Payload, into=reg)
    def gated(params: Payload) -> Flow:
        """hold (until the test opens the gate) -> after."""
        return Flow.of(Step("hold", hold, retry=Retry(attempts=1)), step("after"))

    @job_kind("not_json", params=Payload, into=reg)
    def not_json(params: Payload) -> Flow:
        """One step whose output JSON cannot carry (NaN)."""
        return Flow.of(Step("score", lambda ctx: {"score": float("nan")}, retry=Retry(attempts=1)))

    class Watching(BaseModel):
        model_config = ConfigDict(extra="forbid")
        payload: Any = None
        url: str = ""

    def watching(ctx: Any) -> Any:
        watched = ctx.state.get("watched")
        if watched is not None:
            return watched
        return ctx.wait(3600, "watching", watch=Watch(ctx.params.url, 60, max_errors=2))

    @job_kind("watcher", params=Watching, into=reg)
    def watcher(params: Watching) -> Flow:
        """One step that waits on a shared URL watch and returns what it found."""
        return Flow.of(Step("watch", watching))


def at_once(n: int, fn: Callable[[int], T]) -> list[T]:
    """Call ``fn(0..n-1)`` from ``n`` threads released together; re-raise the first error."""
    barrier = threading.Barrier(n)

    def run(i: int) -> T:
        barrier.wait(timeout=10)
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(run, i) for i in range(n)]
        return [f.result(timeout=60) for f in futures]


def parse(stamp: str | None) -> datetime:
    assert stamp is not None
    value = datetime.fromisoformat(stamp)
    assert value.utcoffset() == timedelta(0), stamp
    return value
