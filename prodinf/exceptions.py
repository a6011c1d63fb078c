"""One error tree for prodinf.

::

    ProdinfError
    ├── TransientError            retry: the same call may succeed later
    │   ├── StoreUnavailable      the job store cannot be reached
    │   ├── BrokerUnavailable     the broker cannot be reached
    │   └── RemoteUnavailable     a remote service is down, erroring or slow
    └── PermanentError            fail now: repeating the call cannot help
        ├── ValidationError       bad input; names the field
        │   └── Unstorable        the job store refused a value as bad data
        ├── NotFound              no such job, kind or resource
        ├── Conflict              the request does not fit the current state
        ├── UnknownKind           no kind registered under that name
        ├── FlowError             a kind built an invalid flow
        ├── AddressDenied         an outbound URL reaches an address the deny list refuses
        └── RemoteJobFailed       a remote job ended in failure

Steps raise ``TransientError`` to be retried under their retry policy and
``PermanentError`` to fail the job at once; any other exception is treated as
transient. The portal maps the tree to HTTP in one place (``portal.errors``).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

__all__ = [
    "AddressDenied",
    "BrokerUnavailable",
    "Conflict",
    "FlowError",
    "Forbidden",
    "NotFound",
    "PermanentError",
    "ProdinfError",
    "RemoteJobFailed",
    "RemoteUnavailable",
    "StoreUnavailable",
    "TransientError",
    "Unauthorized",
    "UnknownKind",
    "Unstorable",
    "ValidationError",
]


class ProdinfError(Exception):
    """Root of every error prodinf raises on purpose."""

    #: HTTP status the portal answers with.
    status_code: int = 500

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "field": self.field}
        if self.details:
            body["details"] = self.details
        return body


class TransientError(ProdinfError):
    """Raised when a call failed for a reason that may pass: retry it later."""

    status_code = 503

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class StoreUnavailable(TransientError):
    """Raised when the job store cannot be reached."""


class BrokerUnavailable(TransientError):
    """Raised when the broker cannot be reached or did not confirm a message."""


class RemoteUnavailable(TransientError):
    """Raised when a remote service is unreachable, answers 5xx, or times out."""


class PermanentError(ProdinfError):
    """Raised when repeating the call cannot succeed: fail now, do not retry."""

    status_code = 400


class ValidationError(PermanentError):
    """Raised when input is invalid; ``field`` names the offending field."""

    status_code = 400


class Unstorable(ValidationError):
    """Raised when the job store refuses a value written as bad data.

    Input is checked before it is written, so this names no field: it means a
    value got past those checks (too long, a character or JSON the database
    cannot keep). The error never carries the value itself.
    """


class NotFound(PermanentError):
    """Raised when a job, kind or resource does not exist."""

    status_code = 404


class Conflict(PermanentError):
    """Raised when a request does not fit the current state (retrying a running job)."""

    status_code = 409


class UnknownKind(ValidationError):
    """Raised when no kind is registered under the requested name."""

    def __init__(self, kind: str, known: Sequence[str] = ()) -> None:
        said = f"unknown kind {kind!r}"
        close = difflib.get_close_matches(str(kind), list(known), n=1)
        if close:
            said += f": did you mean {close[0]!r}?"
        elif known:
            said += "."
        if known:
            said += f" The kinds here: {', '.join(known)} (prodinf kinds, GET /api/v1/kinds)"
        super().__init__(said, field="kind", kind=kind)


class FlowError(PermanentError):
    """Raised when a kind builds an invalid flow (duplicate step, unknown or cyclic dependency)."""

    status_code = 500


class RemoteJobFailed(PermanentError):
    """Raised when a remote job ended in failure; ``details`` holds its final document."""

    status_code = 502


class AddressDenied(PermanentError):
    """Raised when a URL that a job or a user gave resolves to an address that
    ``PRODINF_DENIED_NETWORKS`` refuses; ``details`` name the ``address`` and ``network``."""


class Unauthorized(PermanentError):
    """Raised when a request has no credentials, or ones that are not (or no longer) valid."""

    status_code = 401


class Forbidden(PermanentError):
    """Raised when a request is refused: a callback whose signature does not match."""

    status_code = 403
