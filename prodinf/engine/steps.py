"""Steps, retry policies and flows: what a kind is built from (waits: :mod:`.waits`)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prodinf.exceptions import FlowError

if TYPE_CHECKING:
    from prodinf.engine.context import StepContext

__all__ = ["Execute", "Flow", "Retry", "Revert", "Step"]

_MAX_EXPONENT = 1000


@dataclass(frozen=True)
class Retry:
    """What a failure of a step means: how often and how late to try again.

    A step that raises ``TransientError`` (or any exception that is not a
    ``PermanentError``) is tried again after ``delay(n)`` seconds, up to
    ``attempts`` tries in all, unless ``deadline`` seconds have passed since its
    first try. The deadline also bounds how long a step may keep waiting.
    """

    attempts: int = 3
    backoff: float = 1.0
    max_backoff: float = 300.0
    jitter: float = 0.2
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise FlowError("Retry.attempts must be at least 1")
        # "not x >= 0" also refuses NaN.
        for name in ("backoff", "max_backoff", "jitter"):
            if not getattr(self, name) >= 0:
                raise FlowError(f"Retry.{name} must not be negative")
        if self.jitter > 1:
            raise FlowError("Retry.jitter must be at most 1")
        if self.deadline is not None and not self.deadline >= 0:
            raise FlowError("Retry.deadline must not be negative")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure (exponential, with jitter).

        Never more than ``max_backoff``, however many failures.
        """
        # 2.0 ** 1024 overflows a float; long before that the cap applies.
        exponent = min(max(0, failures - 1), _MAX_EXPONENT)
        base = min(self.max_backoff, self.backoff * 2.0**exponent)
        return min(self.max_backoff, base * (1 + random.uniform(-self.jitter, self.jitter)))


Execute = Callable[["StepContext[Any]"], Any]
Revert = Callable[["StepContext[Any]"], None]


@dataclass(frozen=True)
class Step:
    """One unit of work in a flow.

    ``execute(ctx)`` returns a JSON-serialisable output that later steps read
    as ``ctx.outputs[name]``, or a ``Wait``. ``revert(ctx)`` undoes it when a
    later step fails for good. ``after`` names the steps it depends on (one
    name may be given as a string); ``None`` means "the step before me in the
    flow", ``()`` means "none". Steps must be idempotent: they may run more
    than once.
    """

    name: str
    execute: Execute
    revert: Revert | None = None
    retry: Retry = Retry()
    after: str | tuple[str, ...] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        # tuple("copy") would make each letter a dependency.
        if isinstance(self.after, str):
            object.__setattr__(self, "after", (self.after,))
        elif self.after is not None:
            object.__setattr__(self, "after", tuple(self.after))


class Flow:
    """The steps of one job, with their dependencies; a graph, linear by default."""

    def __init__(self, steps: Iterable[Step]) -> None:
        self.steps: tuple[Step, ...] = tuple(steps)
        if not self.steps:
            raise FlowError("a flow needs at least one step")
        self.by_name: dict[str, Step] = {}
        self.deps: dict[str, tuple[str, ...]] = {}
        previous: str | None = None
        for step in self.steps:
            if step.name in self.by_name:
                raise FlowError(f"step {step.name!r} appears twice")
            self.by_name[step.name] = step
            if step.after is None:
                self.deps[step.name] = (previous,) if previous else ()
            else:
                self.deps[step.name] = tuple(step.after)
            previous = step.name
        for name, deps in self.deps.items():
            for dep in deps:
                if dep not in self.by_name:
                    raise FlowError(f"step {name!r} depends on unknown step {dep!r}")
        self._check_acyclic()

    @classmethod
    def of(cls, *steps: Step) -> Flow:
        return cls(steps)

    def _check_acyclic(self) -> None:
        done: set[str] = set()
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in done:
                return
            if name in visiting:
                raise FlowError(f"steps depend on each other in a cycle through {name!r}")
            visiting.add(name)
            for dep in self.deps[name]:
                visit(dep)
            visiting.discard(name)
            done.add(name)

        for name in self.by_name:
            visit(name)

    def sinks(self) -> list[str]:
        """Steps no other step depends on: their outputs make the job's result."""
        needed = {dep for deps in self.deps.values() for dep in deps}
        return [step.name for step in self.steps if step.name not in needed]
