"""The generic "status URL" contract: GET a URL once, and what its JSON ``status`` means.

A JSON document whose ``status`` is one of :data:`PENDING_STATUSES` is still going;
any other status means done, and :data:`SUCCEEDED_STATUSES` the ones that count as
success. :func:`fetch_status` is the one-shot GET for polling steps that run their
own retry policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

from prodinf.exceptions import PermanentError, RemoteUnavailable
from prodinf.outbound import Guard
from prodinf.redact import redact, redact_text, url_credentials
from prodinf.status import ACTIVE, JobStatus

__all__ = [
    "PENDING_STATUSES",
    "SUCCEEDED_STATUSES",
    "fetch_status",
    "http_errors",
    "is_pending",
    "json_object",
]

#: Statuses meaning "not finished yet, keep waiting" in the generic status URL contract:
#: a prodinf job that is not over, and the words other job services use.
PENDING_STATUSES: frozenset[str] = frozenset(ACTIVE | {"submitted", "incomplete"})

#: Final statuses that count as success: prodinf's own, and other services' words.
SUCCEEDED_STATUSES: frozenset[str] = frozenset(
    {JobStatus.SUCCEEDED, "complete", "completed", "success", "done"}
)


@contextmanager
def http_errors(method: str, shown: str) -> Iterator[None]:
    """Requests' errors as prodinf's: a URL that can never work is a ``PermanentError``,
    anything else (unreachable, timed out, reset) ``RemoteUnavailable``. ``shown`` is
    the URL as messages show it (masked)."""
    try:
        yield
    except BAD_URL_ERRORS as exc:
        raise PermanentError(
            f"{method} {shown}: invalid URL ({type(exc).__name__})", field="url", url=shown
        ) from None
    except requests.RequestException as exc:
        raise RemoteUnavailable(
            f"{method} {shown} failed: {type(exc).__name__}: {redact_text(str(exc))}", url=shown
        ) from exc


#: Requests errors that no retry can cure: the URL itself is wrong.
BAD_URL_ERRORS: tuple[type[requests.RequestException], ...] = (
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidURL,
    requests.exceptions.URLRequired,
)


def is_pending(status: str | None) -> bool:
    """Return True if ``status`` means "keep waiting" (case-insensitive); None means done."""
    return status is not None and status.strip().lower() in PENDING_STATUSES


def json_object(response: requests.Response) -> dict[str, Any] | None:
    """The response body as a JSON object, or None if it is not one."""
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def fetch_status(
    url: str, *, timeout: float = 10.0, guard: Guard | None = None
) -> tuple[int, dict[str, Any] | None]:
    """GET ``url`` once (no retries) and return ``(HTTP status, JSON object or None)``.

    The second item is None when the body is not a JSON object (HTML, a list,
    empty...). Any HTTP status is returned, not raised: the caller owns the retry
    policy. Credentials in ``url`` are sent as basic auth; the document comes back with
    them masked wherever the service quotes them (``Authorization: Basic ...``, the
    password itself), and every other credential in it too (``redact``): it is kept,
    shown and mailed. Redirects are followed, each checked by ``guard`` (the default
    deny list when None) as the first request is.

    :raises RemoteUnavailable: connection error or timeout.
    :raises AddressDenied: ``url``, or a redirect, reaches an address ``guard`` refuses.
    :raises PermanentError: ``url`` is not a usable http(s) URL.
    """
    session = (guard or Guard()).session()
    with http_errors("GET", redact_text(url)), session:
        response = session.get(
            url, timeout=(timeout, timeout), headers={"Accept": "application/json"}
        )
    with response:
        document = json_object(response)
    masked = redact(document, secrets=url_credentials(url)) if document is not None else None
    return response.status_code, masked
