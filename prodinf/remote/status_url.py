"""The generic "status URL" contract: GET a URL once, and what its JSON ``status`` means.

A JSON document whose ``status`` is one of :data:`PENDING_STATUSES` is still going;
any other status means done, and :data:`SUCCEEDED_STATUSES` the ones that count as
success. :func:`fetch_status` is the one-shot GET for polling steps that run their
own retry policy; :func:`look_status` the same GET, conditional when the caller kept
what the server's last answer said (``ETag``, ``Last-Modified``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

from prodinf.exceptions import PermanentError, RemoteUnavailable
from prodinf.outbound import Guard
from prodinf.redact import redact, redact_text, url_credentials
from prodinf.remote.sessions import get_kept
from prodinf.status import ACTIVE, JobStatus

__all__ = [
    "PENDING_STATUSES",
    "SUCCEEDED_STATUSES",
    "Answer",
    "fetch_status",
    "http_errors",
    "is_pending",
    "json_object",
    "look_status",
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


@dataclass(frozen=True)
class Answer:
    """One look at a status URL: the HTTP ``code``, the JSON object (``None`` if the body
    is not one, or for a 304) and the validators the server sent for a conditional look
    next time (``ETag``, ``Last-Modified``)."""

    code: int
    document: dict[str, Any] | None
    etag: str | None = None
    last_modified: str | None = None


def look_status(
    url: str,
    *,
    timeout: float = 10.0,
    guard: Guard | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
) -> Answer:
    """GET ``url`` once (no retries) on its host's kept connection
    (:mod:`prodinf.remote.sessions`); with ``etag`` or ``last_modified`` (what an
    earlier answer's validators said), conditionally: ``If-None-Match``,
    ``If-Modified-Since``, and a 304 answer means the document has not changed.

    Any HTTP status is returned, not raised: the caller owns the retry policy.
    Credentials in ``url`` are sent as basic auth; the document comes back with them
    masked wherever the service quotes them (``Authorization: Basic ...``, the password
    itself), and every other credential in it too (``redact``): it is kept, shown and
    mailed. Redirects are followed, each checked by ``guard`` (the default deny list
    when None) as the first request is.

    :raises RemoteUnavailable: connection error or timeout.
    :raises AddressDenied: ``url``, or a redirect, reaches an address ``guard`` refuses.
    :raises PermanentError: ``url`` is not a usable http(s) URL.
    """
    headers = {"Accept": "application/json"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    with http_errors("GET", redact_text(url)):
        response = get_kept(url, guard or Guard(), headers=headers, timeout=(timeout, timeout))
    with response:
        document = json_object(response) if response.status_code != 304 else None
    masked = redact(document, secrets=url_credentials(url)) if document is not None else None
    return Answer(
        response.status_code,
        masked,
        response.headers.get("ETag"),
        response.headers.get("Last-Modified"),
    )


def fetch_status(
    url: str, *, timeout: float = 10.0, guard: Guard | None = None
) -> tuple[int, dict[str, Any] | None]:
    """GET ``url`` once (no retries) and return ``(HTTP status, JSON object or None)``:
    :func:`look_status`, unconditionally.

    The second item is None when the body is not a JSON object (HTML, a list,
    empty...).

    :raises RemoteUnavailable: connection error or timeout.
    :raises AddressDenied: ``url``, or a redirect, reaches an address ``guard`` refuses.
    :raises PermanentError: ``url`` is not a usable http(s) URL.
    """
    answer = look_status(url, timeout=timeout, guard=guard)
    return answer.code, answer.document
