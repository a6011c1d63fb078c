"""What a step sees while it runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel
from sqlalchemy import Connection

from prodinf.config import Settings
from prodinf.engine.steplog import step_logger
from prodinf.engine.waits import Child, Wait, Watch

__all__ = ["StepContext"]

T = TypeVar("T")
#: The params model of the kind whose step runs.
P = TypeVar("P", bound=BaseModel)


class _Hooks(Protocol):
    def save_state(self, state: dict[str, Any]) -> None: ...
    def progress(self, message: str) -> None: ...
    def cancel_requested(self) -> bool: ...
    def children(self, of: str | None = None) -> dict[str, Any]: ...
    def transaction(self) -> AbstractContextManager[Connection]: ...


class StepContext(Generic[P]):
    """The job, params, earlier outputs and persisted state of one step execution.

    Generic over the kind's params model: a step of a kind with ``params=CopyParams``
    takes ``ctx: StepContext[CopyParams]`` and reads ``ctx.params.src_uri`` typed.
    """

    def __init__(
        self,
        *,
        job_id: str,
        kind: str,
        params: P,
        step: str,
        attempt: int,
        outputs: Mapping[str, Any],
        state: dict[str, Any],
        settings: Settings,
        hooks: _Hooks,
        output: Any = None,
        registry: Any = None,
    ) -> None:
        self.job_id = job_id
        self.kind = kind
        self.params = params
        self.step = step
        #: 1 for the first try, 2 after one failure, ...
        self.attempt = attempt
        #: Outputs of the job's succeeded steps, by step name.
        self.outputs = outputs
        #: Persisted between executions of this step (waits, recorded side effects).
        self.state = state
        self.settings = settings
        #: In ``revert``: this step's own output.
        self.output = output
        #: The kinds (a ``Registry``) of the prodinf that runs the step, for a step that
        #: records jobs itself; None outside a runner.
        self.registry = registry
        #: A logger (``ctx.log.info("copied %d rows", n)``) whose lines are kept with this
        #: attempt of the step, as is what the step logs through ``logging`` while it
        #: runs: see the job page, ``prodinf logs`` and ``GET /api/v1/jobs/<id>/logs``.
        self.log = step_logger(kind, job_id, step)
        self._hooks = hooks

    def once(self, key: str, effect: Callable[[], T]) -> T:
        """Run ``effect`` once for this step and remember its JSON-able result.

        The result is committed to the store before ``once`` returns, so an
        execution that runs again (after a crash or a wait) gets the recorded
        result instead of repeating the side effect.
        """
        effects = self.state.setdefault("effects", {})
        if key in effects:
            return effects[key]  # type: ignore[no-any-return]
        value = effect()
        effects[key] = value
        self._hooks.save_state(self.state)
        return value

    def recorded(self, key: str) -> Any:
        """What ``once`` or ``record`` recorded under ``key`` for this step, or ``None``."""
        return self.state.get("effects", {}).get(key)

    def record(self, key: str, value: Any) -> None:
        """Record ``value`` under ``key`` for this step, committed before returning: for a
        side effect whose end is known inside a call (``deliver(..., accepted=...)``)."""
        self.state.setdefault("effects", {})[key] = value
        self._hooks.save_state(self.state)

    def wait(
        self, seconds: float, reason: str, *, watch: Watch | None = None, **state: Any
    ) -> Wait:
        """A ``Wait`` to return: run this step again in ``seconds`` without holding a worker
        (or sooner, once the ``watch``-ed URL finishes)."""
        return Wait(seconds=seconds, reason=reason, state=state, watch=watch)

    def start(
        self,
        children: Sequence[Child],
        reason: str,
        *,
        timeout: float = 7 * 86400,
        last: bool = False,
        **state: Any,
    ) -> Wait:
        """A ``Wait`` to return: start ``children`` (those not started yet) and wait for
        them without holding a worker. Each child's end wakes this step at once (with
        ``last``, only the end of the last one running: in the transaction that
        records it); it then reads them with :meth:`children` and returns its output,
        or ``start``s again to wait for the rest. ``timeout`` is the longest wait (the
        step runs again then)."""
        return Wait(
            seconds=timeout, reason=reason, state=state, children=tuple(children), last=last
        )

    def children(self, of: str | None = None) -> dict[str, Any]:
        """The jobs this step started, by name: each a ``ChildJob`` (``id``, ``kind``,
        ``status``, ``result``, ``error``). With ``of``, those the step of the same name
        of job ``of`` started (to follow another job's children, read-only)."""
        return self._hooks.children(of)

    def transaction(self) -> AbstractContextManager[Connection]:
        """A transaction on the job store, for a step that keeps rows of its own (a
        handover taking a copy slot); committed when the block ends."""
        return self._hooks.transaction()

    def progress(self, message: str) -> None:
        """Show ``message`` as the job's progress (committed at once)."""
        self._hooks.progress(message)

    def cancel_requested(self) -> bool:
        """True once someone asked to cancel the job; long steps should stop early."""
        return self._hooks.cancel_requested()
