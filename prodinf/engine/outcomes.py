"""What a step's run came out as, checked before anything of it is stored.

The runner records an :class:`Outcome` in the transaction that claims the next step;
:func:`checked` makes it what the store will keep (JSON only, and as the store gives
it back, which is what a next step reads of it).
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field, replace
from typing import Any

from prodinf.engine.waits import Commit, Wait
from prodinf.exceptions import PermanentError, ProdinfError
from prodinf.redact import redact, redact_text

__all__ = ["Outcome", "checked", "error_info", "require_json", "writes_more"]


@dataclass
class Outcome:
    """How a step's run ended: its value, or the error it raised."""

    value: Any = None
    error: BaseException | None = None
    trace: str = ""
    #: The step's state to store; ``None`` keeps what is stored.
    state: dict[str, Any] | None = field(default_factory=dict)
    #: Seconds the step's code ran.
    seconds: float = 0.0


def error_info(error: BaseException, step: str | None, attempt: int) -> dict[str, Any]:
    """A job's or step's ``error`` field: type, message (credentials masked), step, attempt."""
    message = error.message if isinstance(error, ProdinfError) else str(error)
    info: dict[str, Any] = {
        "type": type(error).__name__,
        "message": redact_text(message or type(error).__name__)[:2000],
        "step": step,
        "attempt": attempt,
        "transient": not isinstance(error, PermanentError),
    }
    if isinstance(error, ProdinfError) and error.details:
        info["details"] = redact(error.details)
    return info


def writes_more(outcome: Outcome) -> bool:
    """Whether recording ``outcome`` writes rows besides the job's own (a ``Commit``'s,
    children started): only a transaction that locks the job's rows does that."""
    value = outcome.value
    return outcome.error is None and (
        isinstance(value, Commit) or (isinstance(value, Wait) and bool(value.children))
    )


def require_json(value: Any, what: str) -> Any:
    """``value`` as the store gives it back (JSON: a tuple is a list, a key a string);
    ``PermanentError`` unless it is JSON (NaN and infinities are not)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise PermanentError(f"{what}: {exc}") from None


def checked(outcome: Outcome, step: str, *, stored: bool) -> Outcome:
    """``outcome`` as the store keeps it, which is what a next step reads of it, or a
    permanent failure if what it would store is not JSON.

    ``stored``: the value is an output or a wait (a revert's return value is not kept).
    """
    try:
        state = require_json(outcome.state, f"step {step} kept a non-JSON state")
    except PermanentError as exc:  # keep the state last stored
        return Outcome(error=exc, trace=traceback.format_exc(), state=None)
    if not stored or outcome.error is not None:
        return replace(outcome, state=state)
    value = outcome.value
    try:
        if isinstance(value, Wait):
            value = replace(
                value, state=require_json(value.state, f"step {step} waits with a non-JSON state")
            )
        elif isinstance(value, Commit):
            output = require_json(value.output, f"step {step} returned a non-JSON output")
            value = replace(value, output=output)
        else:
            value = require_json(value, f"step {step} returned a non-JSON output")
    except PermanentError as exc:
        return Outcome(error=exc, trace=traceback.format_exc(), state=state)
    return replace(outcome, value=value, state=state)
