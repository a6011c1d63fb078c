"""The client of remote job services: submit a job over HTTP, then poll it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import requests

from prodinf.exceptions import (
    Conflict,
    NotFound,
    PermanentError,
    RemoteUnavailable,
    ValidationError,
)
from prodinf.outbound import Guard
from prodinf.redact import redact, redact_text, url_credentials
from prodinf.remote.deadline import CALL_DEADLINE, DeadlineRetry
from prodinf.remote.status_url import (
    SUCCEEDED_STATUSES,
    http_errors,
    is_pending,
    json_object,
)

__all__ = ["RETRY_STATUSES", "RemoteJob", "RemoteJobClient"]

#: HTTP statuses retried inside a call (on every method).
RETRY_STATUSES: frozenset[int] = frozenset({500, 502, 503, 504})

#: 4xx statuses that mean "try later": reported as RemoteUnavailable, not retried in-call.
_TRANSIENT_4XX = frozenset({408, 429})

_JOBS_PATH = "/api/v1/jobs"
_MIN_TIMEOUT = 0.05


@dataclass(frozen=True)
class RemoteJob:
    """A snapshot of one remote job.

    ``url`` is absolute and never carries credentials; ``document`` is the JSON
    object the service last answered with (the submit answer right after
    :meth:`RemoteJobClient.submit`, the full job document after ``get``/``wait``).
    """

    id: str
    url: str
    status: str
    document: dict[str, Any]

    @property
    def finished(self) -> bool:
        """True once the status is no longer one of :data:`PENDING_STATUSES`."""
        return not is_pending(self.status)

    @property
    def succeeded(self) -> bool:
        """True if the job finished successfully (status in :data:`SUCCEEDED_STATUSES`)."""
        return self.status.strip().lower() in SUCCEEDED_STATUSES


def _without_credentials(url: str) -> str:
    """Return ``url`` with any ``user:password@`` removed."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None


class RemoteJobClient:
    """Submit jobs to and poll jobs of a remote prodinf-style job service.

    :param base_url: the service root, e.g. ``https://prodinf.example.org``. A
        ``user:password@`` in it is sent as HTTP basic auth to that host only.
    :param timeout: connect and read timeout of one HTTP attempt, in seconds.
    :param retries: how many times a call retries connection errors, read errors
        and 500/502/503/504 answers (so at most ``retries + 1`` attempts).
    :param backoff: backoff factor: waits between attempts are 0, then
        ``backoff * 2``, ``backoff * 4``, ... seconds (a ``Retry-After`` header wins).
    :param deadline: the longest one call (``submit``/``get``) may take, retries included.
    :param headers: extra headers sent with every request (e.g. an API token).
    :param guard: the addresses the client may reach (``Guard.of(settings)``); None means
        the default deny list. A URL refused raises :class:`AddressDenied`.
    :param secrets: values never to show (the token in ``headers``): masked wherever the
        service quotes them back, in its error messages and in the documents returned,
        as the credentials of ``base_url`` are.

    The client holds a connection pool: use it as a context manager or call
    :meth:`close`. Like the requests.Session inside it, give each thread its own client.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.5,
        deadline: float = 60.0,
        headers: Mapping[str, str] | None = None,
        guard: Guard | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError(
                f"base_url must be an http(s) URL with a host, not {redact_text(base_url)!r}",
                field="base_url",
            )
        for name, value in (("timeout", timeout), ("deadline", deadline)):
            if not value > 0:
                raise ValidationError(f"{name} must be positive, not {value!r}", field=name)
        if retries < 0 or backoff < 0:
            raise ValidationError("retries and backoff must not be negative", field="retries")

        found = {s for s in (*secrets, *url_credentials(base_url.strip())) if s}
        self._secrets = tuple(sorted(found, key=len, reverse=True))
        self._auth: tuple[str, str] | None = None
        if parts.username is not None or parts.password is not None:
            self._auth = (unquote(parts.username or ""), unquote(parts.password or ""))
        #: The service root without credentials or trailing slash.
        self.base_url: str = _without_credentials(urlunsplit(parts)).rstrip("/")
        self._origin = _origin(self.base_url)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.deadline = float(deadline)

        retry = DeadlineRetry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            allowed_methods=None,  # every method: submissions carry an idempotency key
            status_forcelist=RETRY_STATUSES,
            backoff_factor=self.backoff,
            raise_on_status=False,  # hand back the last 5xx so its message can be reported
            respect_retry_after_header=True,
        )
        adapter = (guard or Guard()).adapter(max_retries=retry)
        self._session = requests.Session()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["Accept"] = "application/json"
        if headers:
            self._session.headers.update(headers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections. The client must not be used afterwards."""
        self._session.close()

    # -- public calls -----------------------------------------------------------

    def submit(
        self,
        kind: str,
        params: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        notify: Mapping[str, Any] | None = None,
    ) -> RemoteJob:
        """Submit a job of ``kind`` with ``params`` and return it as the service reports it.

        A 201 (created) and a 200 (the job already created under
        ``idempotency_key``) both return the job. Without a key, a fresh one is
        generated so that this call's own retries cannot create the job twice;
        pass a stable key to make repeated *calls* idempotent too. ``notify``
        (``{"webhook": url}``, ``{"email": [...]}``) asks the service to report the
        job's end there.

        :raises ValidationError: ``params`` are not JSON-serialisable, or the
            service rejected the submission (400/422; ``field`` names the culprit).
        :raises PermanentError: any other 4xx, or an answer that is not a job.
        :raises RemoteUnavailable: unreachable, timed out or 5xx after retries.
        """
        payload = {
            "kind": kind,
            "params": dict(params),
            "idempotency_key": idempotency_key or uuid.uuid4().hex,
        }
        if notify is not None:
            payload["notify"] = dict(notify)
        try:
            body = json.dumps(payload, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"params are not JSON-serialisable: {exc}", field="params"
            ) from exc
        url = self.base_url + _JOBS_PATH
        doc = self._call("POST", url, body=body)
        job_id = doc.get("id")
        if job_id is None or job_id == "":
            raise PermanentError(
                f"POST {url} answered without a job id", url=url, document=self._masked(doc)
            )
        job_url = doc.get("url")
        if isinstance(job_url, str) and job_url:
            job_url = urljoin(self.base_url + "/", job_url)
        else:
            job_url = f"{url}/{quote(str(job_id), safe='')}"
        status = doc.get("status")
        return RemoteJob(
            id=str(job_id),
            url=_without_credentials(job_url),
            status=status if isinstance(status, str) else "submitted",
            document=self._masked(doc),
        )

    def get(self, url_or_id: str) -> RemoteJob:
        """Fetch a job by its URL (absolute or relative to the base URL) or by its id.

        A bare id (no ``/``) is looked up at ``{base_url}/api/v1/jobs/<id>``.

        :raises NotFound: the service answered 404.
        :raises PermanentError: another 4xx, or the answer has no ``status``.
        :raises RemoteUnavailable: unreachable, timed out or 5xx after retries.
        """
        return self._get(self._job_url(url_or_id), budget=self.deadline)

    def wait(
        self,
        job: RemoteJob | str,
        *,
        interval: float = 2.0,
        deadline: float = 3600.0,
    ) -> RemoteJob:
        """Block until ``job`` (a RemoteJob, URL or id) finishes and return its final state.

        Polls every ``interval`` seconds. A finished job is returned whatever its
        outcome: check :attr:`RemoteJob.succeeded`. Transient failures while
        polling are tolerated until ``deadline``; a 4xx (e.g. NotFound) is raised
        at once. A RemoteJob that is already finished is returned without polling.

        :raises RemoteUnavailable: the job is still pending (or the service
            unreachable) after ``deadline`` seconds.
        """
        current = job if isinstance(job, RemoteJob) else None
        if current is not None and current.finished:
            return current
        url = current.url if current is not None else self._job_url(str(job))
        end = time.monotonic() + deadline
        last_error: RemoteUnavailable | None = None
        while (remaining := end - time.monotonic()) > 0:
            try:
                current = self._get(url, budget=min(self.deadline, remaining))
            except RemoteUnavailable as exc:
                last_error = exc
            else:
                last_error = None
                if current.finished:
                    return current
            remaining = end - time.monotonic()
            if remaining > 0:
                time.sleep(min(interval, remaining))
        shown = redact_text(url)
        status = current.status if current is not None else "unknown"
        message = f"job at {shown} still {status!r} after waiting {deadline:g}s"
        if last_error is not None:
            message += f"; last poll failed: {last_error.message}"
        raise RemoteUnavailable(message, url=shown, status=status) from last_error

    # -- plumbing ---------------------------------------------------------------

    def _job_url(self, url_or_id: str) -> str:
        value = url_or_id.strip()
        if not value:
            raise ValidationError("a job id or URL is required", field="url_or_id")
        if "/" not in value:
            return f"{self.base_url}{_JOBS_PATH}/{quote(value, safe='')}"
        return urljoin(self.base_url + "/", value)

    def _get(self, url: str, *, budget: float) -> RemoteJob:
        doc = self._call("GET", url, budget=budget)
        status = doc.get("status")
        if not isinstance(status, str):
            raise PermanentError(
                f"GET {redact_text(url)} answered a document without a status",
                url=redact_text(url),
            )
        job_id = doc.get("id")
        if job_id is None or job_id == "":
            job_id = urlsplit(url).path.rstrip("/").rpartition("/")[2]
        return RemoteJob(
            id=str(job_id),
            url=_without_credentials(url),
            status=status,
            document=self._masked(doc),
        )

    def _auth_for(self, url: str) -> tuple[str, str] | None:
        """Base-URL credentials, but only for the base URL's own origin."""
        if self._auth is None or urlsplit(url).username is not None:
            return None
        return self._auth if _origin(url) == self._origin else None

    def _call(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        budget: float | None = None,
    ) -> dict[str, Any]:
        """One logical call (retries included) that returns the 2xx JSON object answered."""
        budget = self.deadline if budget is None else budget
        attempt = max(min(self.timeout, budget), _MIN_TIMEOUT)
        shown = redact_text(url)
        token = CALL_DEADLINE.set(time.monotonic() + budget)
        try:
            with http_errors(method, shown):
                response = self._session.request(
                    method,
                    url,
                    data=body,
                    headers={"Content-Type": "application/json"} if body is not None else None,
                    timeout=(attempt, attempt),
                    auth=self._auth_for(url),
                )
        finally:
            CALL_DEADLINE.reset(token)
        with response:
            return _check(method, shown, response, self._secrets)

    def _masked(self, document: dict[str, Any]) -> dict[str, Any]:
        """``document`` as the service answered it, its credentials masked."""
        masked: dict[str, Any] = redact(document, secrets=self._secrets)
        return masked


def _check(
    method: str, shown: str, response: requests.Response, secrets: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Return a 2xx answer's JSON object, or raise the error the answer stands for (its
    message with ``secrets`` and every credential masked)."""
    status = response.status_code
    doc = json_object(response)
    if 200 <= status < 300:
        if doc is None:
            raise PermanentError(
                f"{method} {shown} answered {status} without a JSON object",
                url=shown,
                status_code=status,
            )
        return doc

    remote_message = doc.get("message") if doc is not None else None
    if not isinstance(remote_message, str) or not remote_message:
        remote_message = " ".join(response.text[:200].split()) or response.reason or "no message"
    remote_message = redact_text(remote_message, secrets=secrets)
    field = doc.get("field") if doc is not None else None
    field = field if isinstance(field, str) else None
    message = f"{method} {shown} answered {status}: {remote_message}"
    details: dict[str, Any] = {
        "url": shown,
        "status_code": status,
        "remote_message": remote_message,
    }
    if status >= 500 or status in _TRANSIENT_4XX:
        raise RemoteUnavailable(message, retry_after=_retry_after(response), field=field, **details)
    error: type[PermanentError]
    if status == 404:
        error = NotFound
    elif status in (400, 422):
        error = ValidationError
    elif status == 409:
        error = Conflict
    else:
        error = PermanentError
    raise error(message, field=field, **details)
