"""Kinds that talk HTTP: ``http_get`` fetches a URL, ``wait_for_url`` waits for one to finish."""

from __future__ import annotations

import hashlib
from typing import Any

import requests
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from prodinf import Flow, Retry, Step, StepContext, Wait, job_kind
from prodinf.exceptions import PermanentError, RemoteUnavailable
from prodinf.limits import HttpUrlParam
from prodinf.outbound import Guard, submitted
from prodinf.redact import redact_text
from prodinf.remote import fetch_status, is_pending

__all__ = ["HttpGetParams", "WaitForUrlParams"]


class HttpGetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrlParam = Field(description="The http(s) URL to fetch.")
    timeout: float = Field(default=30.0, gt=0, le=3600, description="Seconds per request.")

    @field_validator("url")
    @classmethod
    def _reachable(cls, value: AnyHttpUrl, info: ValidationInfo) -> AnyHttpUrl:
        submitted(str(value), info)  # a denied address: 400 at submission
        return value


class WaitForUrlParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrlParam = Field(description="A URL answering JSON with a `status` field.")
    interval: float = Field(default=60.0, ge=0.1, le=86400, description="Seconds between looks.")
    timeout: float = Field(
        default=7 * 86400, gt=0, description="Seconds after which waiting fails."
    )
    max_errors: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Failed looks in a row (errors, 404, not JSON) before failing.",
    )

    @field_validator("url")
    @classmethod
    def _reachable(cls, value: AnyHttpUrl, info: ValidationInfo) -> AnyHttpUrl:
        submitted(str(value), info)  # a denied address: 400 at submission
        return value


def _fetch(ctx: StepContext[HttpGetParams]) -> dict[str, Any]:
    params = ctx.params
    url = str(params.url)
    digest = hashlib.sha256()
    size = 0
    # Redirects are followed, each checked as the URL is: AddressDenied fails the job.
    try:
        with (
            Guard.of(ctx.settings).session() as session,
            session.get(url, stream=True, timeout=params.timeout) as response,
        ):
            if response.status_code >= 500:
                raise RemoteUnavailable(f"{redact_text(url)} answered {response.status_code}")
            if response.status_code >= 400:
                raise PermanentError(f"{redact_text(url)} answered {response.status_code}")
            for chunk in response.iter_content(chunk_size=65536):
                digest.update(chunk)
                size += len(chunk)
            status = response.status_code
    except requests.RequestException as exc:
        raise RemoteUnavailable(f"GET {redact_text(url)} failed: {type(exc).__name__}") from exc
    return {"status_code": status, "sha256": digest.hexdigest(), "bytes": size}


@job_kind("http_get", queue="jobs", params=HttpGetParams)
def http_get(params: HttpGetParams) -> Flow:
    """Fetch a URL; the result is its status code, SHA-256 and size in bytes."""
    return Flow.of(Step("fetch", _fetch, retry=Retry(attempts=3, backoff=1.0)))


def _look(ctx: StepContext[WaitForUrlParams]) -> Any:
    params = ctx.params
    url = str(params.url)
    errors = int(ctx.state.get("errors", 0))
    try:
        code, document = fetch_status(
            url, timeout=min(30.0, max(5.0, params.interval)), guard=Guard.of(ctx.settings)
        )
        if code != 200 or document is None:
            problem = f"answered {code}" if code != 200 else "did not answer a JSON object"
            raise RemoteUnavailable(f"{redact_text(url)} {problem}")
    except RemoteUnavailable as exc:
        errors += 1
        if errors >= params.max_errors:
            raise PermanentError(f"gave up after {errors} failed looks: {exc.message}") from exc
        backoff = min(params.interval * 2 ** (errors - 1), 3600.0)
        return Wait(
            backoff,
            f"look {errors} failed ({exc.message}); next in {backoff:.0f}s",
            {"errors": errors},
        )
    status = document.get("status")
    if is_pending(status if isinstance(status, str) else None):
        return Wait(params.interval, f"{redact_text(url)} is {status}", {"errors": 0})
    return document


@job_kind("wait_for_url", queue="jobs", params=WaitForUrlParams)
def wait_for_url(params: WaitForUrlParams) -> Flow:
    """Wait until a URL's JSON `status` is final; the result is that JSON."""
    return Flow.of(
        Step(
            "wait",
            _look,
            retry=Retry(
                attempts=params.max_errors, backoff=params.interval, deadline=params.timeout
            ),
        )
    )
