"""A urllib3 retry policy that stops at the deadline of the call it serves."""

from __future__ import annotations

import contextvars
import time
from types import TracebackType
from typing import Self

from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import InvalidHeader, MaxRetryError, ResponseError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

__all__ = ["CALL_DEADLINE", "DeadlineRetry"]

# Monotonic time by which the current call must end; read by DeadlineRetry,
# which urllib3 runs synchronously in the calling thread.
CALL_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "prodinf_remote_call_deadline", default=None
)


class DeadlineRetry(Retry):
    """A urllib3 ``Retry`` that also stops at the calling thread's call deadline.

    It gives up (as if retries were spent) when the next attempt could not start
    before the deadline, and never sleeps past it. 4xx answers are never retried,
    even with a ``Retry-After`` header.
    """

    RETRY_AFTER_STATUS_CODES = frozenset[int]()

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        end = CALL_DEADLINE.get()
        if end is not None and time.monotonic() + new._delay(response) >= end:
            reason = error or ResponseError("call deadline reached")
            raise MaxRetryError(_pool, url, reason) from reason  # type: ignore[arg-type]
        return new

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        end = CALL_DEADLINE.get()
        if end is None:
            super().sleep(response)
            return
        delay = min(self._delay(response), end - time.monotonic())
        if delay > 0:
            time.sleep(delay)

    def _delay(self, response: BaseHTTPResponse | None) -> float:
        """Seconds to wait before the next attempt: Retry-After if given, else backoff."""
        if response is not None and self.respect_retry_after_header:
            try:
                after = self.get_retry_after(response)
            except InvalidHeader:
                after = None
            if after is not None:
                return max(after, 0.0)
        return self.get_backoff_time()
