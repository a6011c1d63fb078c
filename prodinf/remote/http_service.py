"""Drive a ``type: http`` job service as its configuration says: submit a job, read its
status in the service's own words.

Usage (one adapter per thread, like the ``requests.Session`` inside it)::

    with HttpJobs(services.by_name["datacheck"]) as jobs:
        job_id = jobs.submit({"database_uri": uri}, key="event-42/check")
        found = jobs.status(job_id, params)   # RemoteStatus(state, status, result, ...)

Each call is one HTTP request of at most ``service.timeout`` seconds to connect and
as long again to read; nothing is retried here, and the service's ``deadline`` is the
caller's to keep. A submission is never redirected (the body and token would go
elsewhere); a status request follows up to five redirects on the same origin only.

Errors come from :mod:`prodinf.exceptions`, each naming the service and the URL with
its password masked:

* :class:`RemoteUnavailable` (try later): unreachable, timed out, 5xx, 408 or 429.
* :class:`PermanentError`: refused (any other 4xx, with the service's message), an
  answer that is not JSON, a JSON pointer that finds nothing, a status in none of the
  service's three lists, a redirect not followed; :class:`AddressDenied`, one, when the
  URL or a redirect reaches an address ``PRODINF_DENIED_NETWORKS`` refuses.

No message, status, result or error text carries the token, the URL password or the
basic-auth header, even when the service echoes them back: all are masked (``***``).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn, Self
from urllib.parse import unquote, urljoin, urlsplit

import requests

from prodinf.exceptions import AddressDenied, PermanentError, RemoteUnavailable, ValidationError
from prodinf.outbound import Guard
from prodinf.redact import redact, redact_text
from prodinf.remote.pointer import MISSING, resolve
from prodinf.remote.services import STATES, HttpService, RemoteState, auth_headers, token_of
from prodinf.remote.status_url import BAD_URL_ERRORS
from prodinf.status import StepStatus
from prodinf.templating import render_templates

__all__ = ["HttpJobs", "RemoteStatus"]

#: Answers that mean "try again later", besides 5xx.
_TRANSIENT_4XX = frozenset({408, 429})
#: Redirects a status request follows (same origin only).
_MAX_REDIRECTS = 5
#: Longest service text quoted in a message.
_QUOTED = 300


@dataclass(frozen=True)
class RemoteStatus:
    """Where a remote job stands, as one status request found it.

    ``state`` is what the service's word ``status`` means; ``result`` is what the
    ``result`` pointer finds (the whole answer when the service sets none) once the
    job succeeded or failed, None while pending; ``message`` is the service's error
    text on failure, when its ``message`` pointer finds one; ``url`` is the status URL
    (masked). Every value is masked.
    """

    state: RemoteState
    status: str
    result: Any
    message: str | None
    url: str


class HttpJobs:
    """Submit jobs to and read the status of jobs of one ``type: http`` service, at the
    addresses ``guard`` allows (the default deny list when None; each redirect followed
    is checked too: :class:`AddressDenied`).

    :raises PermanentError: (when built) its ``token_env`` names a variable that is not set.
    """

    def __init__(self, service: HttpService, *, guard: Guard | None = None) -> None:
        self.service = service
        headers = auth_headers(service)
        self._secrets = _secrets(service, token_of(service), headers.get(service.auth_header))
        self._session = (guard or Guard()).session()
        self._session.headers.update({"Accept": "application/json", **headers})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.service.name!r})"

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
        """Close the pooled connections."""
        self._session.close()

    # -- the two calls -----------------------------------------------------------------

    def submit(self, params: dict[str, Any], *, key: str) -> str:
        """Submit a job with ``params`` and return its id, as the ``job_id`` pointer
        finds it in the answer. ``key`` (an idempotency key) is there for the path and
        body templates to send, so that the service can tell a repeat.

        :raises ValidationError: a template of the path or body reads what ``params``
            does not have; the message names the service and the template.
        """
        service = self.service
        context = {"params": params, "key": key}
        path = self._render(service.submit.path, context, "submit.path")
        body = self._render(service.submit.body, context, "submit.body")
        url = service.url_for(str(path))
        data = None
        if body is not None:
            try:
                data = json.dumps(body, allow_nan=False).encode()
            except (TypeError, ValueError) as exc:
                raise ValidationError(
                    f"service {service.name!r}: submit.body is not JSON: {exc}",
                    field="submit.body",
                ) from None
        method = service.submit.method
        document = self._call(method, url, data, follow=False)
        found = self._find(document, service.job_id, "job id", method, url)
        if isinstance(found, bool) or not isinstance(found, str | int) or found == "":
            raise PermanentError(
                f"service {service.name!r}: the job id at {service.job_id!r} in the answer of "
                f"{method} {self._mask(url)} is {self._quote(found)}, not a string or number",
                field="job_id",
                service=service.name,
            )
        return str(found)

    def status(self, job_id: str, params: dict[str, Any]) -> RemoteStatus:
        """Where job ``job_id`` stands: GET its ``status_url`` and read its status."""
        service = self.service
        context = {"job_id": job_id, "params": params}
        url = service.url_for(str(self._render(service.status_url, context, "status_url")))
        document = self._call("GET", url, None, follow=True)
        found = self._find(document, service.status, "status", "GET", url)
        word = found if isinstance(found, str) else json.dumps(found)
        state = service.state_of(word)
        if state is None:
            lists = ", ".join(f"{s}: {getattr(service, s)}" for s in STATES)
            raise PermanentError(
                f"unknown status {self._quote(word)} from service {service.name!r} ({lists})",
                field="status",
                service=service.name,
                url=self._mask(url),
                status=self._mask(word),
            )
        result: Any = None
        message: str | None = None
        if state != StepStatus.PENDING:
            if service.result is None:
                result = document
            elif state == StepStatus.SUCCEEDED:
                result = self._find(document, service.result, "result", "GET", url)
            else:
                result = _or_none(resolve(document, service.result))
        if state == StepStatus.FAILED and service.message is not None:
            text = resolve(document, service.message)
            if text is not MISSING and text is not None:
                message = self._mask(text if isinstance(text, str) else json.dumps(text))
        return RemoteStatus(
            state=state,
            status=self._mask(word),
            result=self._masked(result),
            message=message,
            url=self._mask(url),
        )

    # -- plumbing ----------------------------------------------------------------------

    def _render(self, template: Any, context: dict[str, Any], where: str) -> Any:
        try:
            return render_templates(template, context, where)
        except ValidationError as exc:
            raise ValidationError(
                f"service {self.service.name!r}: {exc.message}", field=exc.field
            ) from None

    def _call(self, method: str, url: str, data: bytes | None, *, follow: bool) -> Any:
        """One request (and, with ``follow``, its same-origin redirects); the JSON of a
        2xx answer, or the error the answer or its absence stands for."""
        timeout = self.service.timeout
        headers = {"Content-Type": "application/json"} if data is not None else None
        for _ in range(_MAX_REDIRECTS + 1):
            shown = self._mask(url)
            try:
                response = self._session.request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    timeout=(timeout, timeout),
                    allow_redirects=False,
                )
            except AddressDenied as exc:
                raise AddressDenied(
                    f"service {self.service.name!r}: {self._mask(exc.message)}",
                    field="url",
                    service=self.service.name,
                    url=self._mask(str(exc.details.get("url", shown))),
                    address=exc.details.get("address"),
                    network=exc.details.get("network"),
                ) from None
            except BAD_URL_ERRORS as exc:
                raise PermanentError(
                    f"service {self.service.name!r}: {method} {shown}: invalid URL "
                    f"({type(exc).__name__})",
                    field="url",
                    service=self.service.name,
                    url=shown,
                ) from None
            except requests.Timeout:
                self._unavailable(f"{method} {shown} timed out after {timeout:g}s", shown)
            except requests.RequestException as exc:
                detail = self._mask(str(exc))[:_QUOTED]
                self._unavailable(
                    f"{method} {shown} is unreachable: {type(exc).__name__}: {detail}", shown
                )
            with response:
                location = response.headers.get("Location")
                if follow and response.is_redirect and location:
                    target = urljoin(url, location)
                    if _origin(target) == _origin(url):
                        url = target
                        continue
                return self._answer(method, shown, response)
        raise PermanentError(
            f"service {self.service.name!r}: {method} {self._mask(url)}: more than "
            f"{_MAX_REDIRECTS} redirects",
            service=self.service.name,
        )

    def _answer(self, method: str, shown: str, response: requests.Response) -> Any:
        name, code = self.service.name, response.status_code
        details: dict[str, Any] = {"service": name, "url": shown, "status_code": code}
        if 200 <= code < 300:
            try:
                return response.json()
            except ValueError:
                raise PermanentError(
                    f"service {name!r}: {method} {shown} answered {code} without JSON: "
                    f"{self._text(response)}",
                    **details,
                ) from None
        if 300 <= code < 400:
            where = self._mask(response.headers.get("Location") or "nowhere")
            raise PermanentError(
                f"service {name!r}: {method} {shown} answered {code}, a redirect to {where} "
                "that is not followed",
                **details,
            )
        said = self._said(response)
        if code >= 500 or code in _TRANSIENT_4XX:
            self._unavailable(
                f"{method} {shown} answered {code}: {said}",
                shown,
                status_code=code,
                retry_after=_retry_after(response),
            )
        raise PermanentError(
            f"service {name!r} refused {method} {shown}: {code}: {said}", **details
        )

    def _unavailable(
        self, what: str, shown: str, *, retry_after: float | None = None, **details: Any
    ) -> NoReturn:
        name = self.service.name
        raise RemoteUnavailable(
            f"service {name!r}: {what}",
            retry_after=retry_after,
            service=name,
            url=shown,
            **details,
        ) from None

    def _find(self, document: Any, pointer: str, what: str, method: str, url: str) -> Any:
        found = resolve(document, pointer)
        if found is MISSING:
            raise PermanentError(
                f"service {self.service.name!r}: no {what} at {pointer!r} in the answer of "
                f"{method} {self._mask(url)}: {self._quote(document)}",
                field=what.replace(" ", "_"),
                service=self.service.name,
            )
        return found

    def _said(self, response: requests.Response) -> str:
        """What the service said in an error answer: its ``message`` (the configured
        pointer, or a usual key), else the start of its text."""
        try:
            document = response.json()
        except ValueError:
            return self._text(response)
        candidates = [resolve(document, self.service.message)] if self.service.message else []
        if isinstance(document, dict):
            candidates += [document.get(k) for k in ("message", "error", "detail")]
        for said in candidates:
            if isinstance(said, str) and said.strip():
                return self._mask(" ".join(said.split()))[:_QUOTED]
        return self._quote(document)

    def _text(self, response: requests.Response) -> str:
        text = " ".join(response.text[: _QUOTED * 4].split())[:_QUOTED]
        return self._mask(text) if text else response.reason or "an empty body"

    def _quote(self, value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        return repr(self._mask(text[: _QUOTED * 4])[:_QUOTED])

    def _mask(self, text: str) -> str:
        return redact_text(text, secrets=self._secrets)

    def _masked(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._mask(value)
        if isinstance(value, dict):
            return {self._mask(str(k)): self._masked(v) for k, v in redact(value).items()}
        if isinstance(value, list):
            return [self._masked(v) for v in value]
        return value


def _secrets(service: HttpService, token: str | None, header: str | None) -> tuple[str, ...]:
    """Every value that must never be shown: the token and its header, and the URL's
    password as sent (plain, and inside the basic-auth header)."""
    found = [header or "", token or ""]
    parts = urlsplit(service.url)
    if parts.password:
        user, password = unquote(parts.username or ""), unquote(parts.password)
        found += [parts.password, password]
        found.append(base64.b64encode(f"{user}:{password}".encode()).decode())
    # Longest first: a header holding the token is masked whole, not around it.
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))


def _or_none(value: Any) -> Any:
    return None if value is MISSING else value


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None
