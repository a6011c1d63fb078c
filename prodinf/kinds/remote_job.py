"""``remote_job``: run a job on a named service of ``PRODINF_SERVICES`` and wait for it.

A subscription whose ``run`` names a ``service`` starts this job as its process (the
handover runs its stages the same way). Two steps:

``submit``
    Submits the job, once: to another prodinf (``type: prodinf``) as a job of
    ``kind`` with ``params`` and this job's id as idempotency key (a submission that
    runs again after a crash makes no second job there), asking for a signed
    completion webhook to ``POST /api/v1/callbacks/<this job>`` when the service has
    a ``secret_env`` and this prodinf a ``PRODINF_PUBLIC_URL``; to an HTTP job
    service (``type: http``) with its ``submit`` request, the params and this job's
    id (``key``) rendered into it. An unreachable service is tried again with
    backoff until its ``deadline``; one that refuses (4xx) fails the job at once.
``wait``
    Looks at the remote job's status every ``poll_interval`` seconds without holding
    a worker; the callback wakes it at once. It ends with the remote job: succeeded
    (its result kept) or failed (naming the service, the remote job and what it
    said). A status the service's vocabulary does not have, or the ``deadline``
    passing, fails it, saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prodinf import Flow, Retry, Step, StepContext, job_kind, metrics
from prodinf.exceptions import PermanentError, RemoteJobFailed, RemoteUnavailable
from prodinf.kinds.subscriptions import REMOTE_KIND
from prodinf.outbound import Guard
from prodinf.redact import redact, redact_text
from prodinf.remote import RemoteJobClient
from prodinf.remote.http_service import HttpJobs
from prodinf.remote.services import (
    HttpService,
    ProdinfService,
    auth_headers,
    load_services,
    secret_of,
    token_of,
)
from prodinf.status import StepStatus
from prodinf.store.types import utcnow

__all__ = ["CALLBACK_PATH", "RemoteJobParams", "callback_url"]

#: Where another prodinf reports a job's end: ``<public url>/api/v1/callbacks/<job id>``.
CALLBACK_PATH = "/api/v1/callbacks/"
#: Submitting and looking: a service down for hours is tried again until its deadline.
PATIENT = Retry(attempts=100_000, backoff=2.0, max_backoff=300.0)


class RemoteJobParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service: str = Field(description="A service of PRODINF_SERVICES.")
    kind: str | None = Field(default=None, description="The kind to run (another prodinf).")
    params: dict[str, Any] = Field(default_factory=dict, description="The job's params.")


def callback_url(ctx: StepContext[RemoteJobParams]) -> str | None:
    """Where the service reports this job's end, when this prodinf can be reached."""
    base = ctx.settings.public_url
    return f"{base.rstrip('/')}{CALLBACK_PATH}{ctx.job_id}" if base else None


def _service(ctx: StepContext[RemoteJobParams]) -> ProdinfService | HttpService:
    found = load_services(ctx.settings.services).by_name.get(ctx.params.service)
    if found is None:
        raise PermanentError(
            f"no service {ctx.params.service!r} in PRODINF_SERVICES", field="service"
        )
    return found


def _client(ctx: StepContext[RemoteJobParams], service: ProdinfService) -> RemoteJobClient:
    return RemoteJobClient(
        service.url,
        timeout=service.timeout,
        retries=0,  # the step's own retry policy tries again, without holding a worker
        deadline=service.timeout,
        headers=auth_headers(service),
        guard=Guard.of(ctx.settings),
        secrets=[token_of(service) or ""],  # masked wherever the service quotes it back
    )


def _jobs(ctx: StepContext[RemoteJobParams], service: HttpService) -> HttpJobs:
    return HttpJobs(service, guard=Guard.of(ctx.settings))


@contextmanager
def _calling(service: str) -> Iterator[None]:
    """One call to ``service``, counted by how it came out
    (``prodinf_service_calls_total``): ok, unavailable (tried again later), error."""
    try:
        yield
    except RemoteUnavailable:
        metrics.service_called(service, "unavailable")
        raise
    except Exception:
        metrics.service_called(service, "error")
        raise
    metrics.service_called(service, "ok")


def _submit(ctx: StepContext[RemoteJobParams]) -> dict[str, Any]:
    service = _service(ctx)
    params = ctx.params
    shown = f"{service.name} ({service.masked_url})"
    submitted = ctx.recorded("submitted_at") or utcnow().isoformat()
    if ctx.recorded("submitted_at") is None:
        ctx.record("submitted_at", submitted)
    if _past(submitted, service.deadline):
        raise PermanentError(
            f"{shown} could not be reached within its deadline of {service.deadline:g}s"
        )
    ctx.progress(f"submitting to {shown}")
    if isinstance(service, ProdinfService):
        if not params.kind:
            raise PermanentError(f"{service.name} is another prodinf: name a kind", field="kind")
        url = callback_url(ctx) if secret_of(service) is not None else None
        with _client(ctx, service) as client, _calling(service.name):
            job = client.submit(
                params.kind,
                params.params,
                idempotency_key=ctx.job_id,
                notify={"webhook": url} if url else None,
            )
        remote = {"id": job.id, "url": job.url, "callback": url is not None}
    else:
        with _jobs(ctx, service) as jobs, _calling(service.name):
            remote = {"id": jobs.submit(params.params, key=ctx.job_id), "url": None}
            remote["callback"] = False
    return {
        "service": service.name,
        "type": service.type,
        "remote_id": remote["id"],
        "url": remote["url"],
        "submitted_at": submitted,
        "callback": remote["callback"],
    }


def _wait(ctx: StepContext[RemoteJobParams]) -> Any:
    service = _service(ctx)
    sent = ctx.outputs["submit"]
    try:
        return _look(ctx, service, sent)
    except RemoteUnavailable as exc:
        if not _past(sent["submitted_at"], service.deadline):
            raise
        raise PermanentError(
            f"{service.name} job {sent['remote_id']}: its deadline of {service.deadline:g}s "
            f"passed; the last look failed: {exc.message}",
            service=service.name,
            remote_id=sent["remote_id"],
        ) from None


def _look(
    ctx: StepContext[RemoteJobParams], service: ProdinfService | HttpService, sent: dict[str, Any]
) -> Any:
    """Look at the remote job once: its outcome, a failure, or a wait for the next look."""
    name, remote_id = service.name, sent["remote_id"]
    if isinstance(service, ProdinfService):
        with _client(ctx, service) as client, _calling(name):
            job = client.get(sent["url"] or remote_id)
        status, document = job.status, redact(job.document)
        if job.finished and job.succeeded:
            return _outcome(sent, status, document.get("result"))
        if job.finished:
            error = document.get("error") or {}
            said = error.get("message") if isinstance(error, dict) else None
            raise RemoteJobFailed(
                f"{name} job {remote_id} {status}" + (f": {said}" if said else ""),
                service=name,
                remote_id=remote_id,
                status=status,
                error=error,
            )
    else:
        with _jobs(ctx, service) as jobs, _calling(name):
            found = jobs.status(remote_id, ctx.params.params)
        status = found.status
        if found.state == StepStatus.SUCCEEDED:
            return _outcome(sent, status, redact(found.result))
        if found.state == StepStatus.FAILED:
            said = redact_text(found.message) if found.message else None
            raise RemoteJobFailed(
                f"{name} job {remote_id} {status}" + (f": {said}" if said else ""),
                service=name,
                remote_id=remote_id,
                status=status,
            )
    if _past(sent["submitted_at"], service.deadline):
        raise PermanentError(
            f"{name} job {remote_id} still {status!r} after its deadline of {service.deadline:g}s",
            service=name,
            remote_id=remote_id,
            status=status,
        )
    return ctx.wait(service.poll_interval, f"{name} job {remote_id} is {status}")


def _outcome(sent: dict[str, Any], status: str, result: Any) -> dict[str, Any]:
    return {
        "service": sent["service"],
        "remote_id": sent["remote_id"],
        "url": sent["url"],
        "status": status,
        "result": result,
    }


def _past(since: str, seconds: float) -> bool:
    return utcnow() > datetime.fromisoformat(since) + timedelta(seconds=seconds)


def _result(outputs: dict[str, Any]) -> Any:
    return outputs.get("wait")


@job_kind(REMOTE_KIND, queue="event", params=RemoteJobParams, result=_result)
def remote_job(params: RemoteJobParams) -> Flow:
    """Run a job on a service of PRODINF_SERVICES (another prodinf, or an HTTP job
    service) and wait for it to end."""
    return Flow.of(Step("submit", _submit, retry=PATIENT), Step("wait", _wait, retry=PATIENT))
