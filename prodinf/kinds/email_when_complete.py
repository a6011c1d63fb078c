"""``email_when_complete``: wait until a URL reports a result, then mail it to an address.

The flow has three steps:

``watch``
    Looks at the URL once, then waits on a shared URL watch
    (:mod:`prodinf.engine.watches`): a reconciler looks at the URL every
    ``interval`` seconds, once for all the notifications waiting on it, and wakes
    this step when it is final. No worker is held and no task runs while it waits.
    A JSON ``status`` in :data:`PENDING_STATUSES` means keep waiting; any other
    status is the result. Errors (connection, 5xx, 404, not JSON) back off and,
    after ``max_errors`` in a row, end the watch as ``failed``; after ``deadline``
    seconds it ends as ``deadline``. The watch itself never fails the job: every
    outcome is worth an email, but one. A URL whose address ``PRODINF_DENIED_NETWORKS``
    refuses (:mod:`prodinf.outbound`), at the first look or a later one, is never
    fetched and fails the job (``AddressDenied``), mailing nobody.

    A URL naming a job of this prodinf (``.../api/v1/jobs/<id>``, whatever the host,
    with or without ``?format=email``: job ids are UUIDs, so the store holding the id
    is this one) is not fetched: the step waits on the job itself, and the
    transaction that ends that job wakes it (``store.watches.wake_job_watchers``). The
    mail is then the job's own summary (what ``?format=email`` answers).
``send``
    Mails the outcome. The JSON's own ``subject`` and ``body`` (and ``html``) when it
    has both, else a summary rendered from templates. The delivery is recorded with
    ``ctx.once`` under a Message-ID made from the job id, so a redelivered task
    does not mail twice; a mail server that is down is retried with backoff.
``report``
    Only for jobs started by the Celery task ``email_when_complete.delay(...)``:
    stores ``{"message_id", "to", "subject"}`` as that task's result, so
    ``AsyncResult.ready()`` turns true once the mail is handed over.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlsplit

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy import select

from prodinf import Flow, Retry, Step, StepContext, Watch, job_kind
from prodinf.addresses import validate_address
from prodinf.engine.notices import snapshot
from prodinf.engine.watches import Seen, look
from prodinf.exceptions import AddressDenied
from prodinf.kinds.job_notification import mail_document
from prodinf.kinds.mailing import DELIVERY, composing, send_once
from prodinf.limits import HttpUrlParam
from prodinf.mail import Mail, Outcome, render_url_report
from prodinf.outbound import Guard, submitted
from prodinf.redact import redact_text
from prodinf.status import TERMINAL
from prodinf.store.models import JOBS
from prodinf.store.watches import job_watch_url
from prodinf.task_results import results_backend

__all__ = ["EmailWhenCompleteParams"]


class EmailWhenCompleteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrlParam = Field(description="A URL answering JSON with a `status` field.")
    address: str = Field(description="Where to send the email.")
    interval: float | None = Field(
        default=None,
        ge=0.1,
        le=86400,
        description="Seconds between looks (default PRODINF_POLL_INTERVAL).",
    )
    deadline: float | None = Field(
        default=None,
        gt=0,
        description="Seconds after which the address is told the URL never finished "
        "(default PRODINF_NOTIFY_DEADLINE, 7 days).",
    )
    max_errors: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Failed looks in a row (errors, 404, not JSON) before giving up.",
    )
    celery_task_id: str | None = Field(
        default=None,
        max_length=200,
        description="Set by the Celery task email_when_complete: where to store its result.",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return validate_address(value, field="params.address")

    @field_validator("url")
    @classmethod
    def _reachable(cls, value: AnyHttpUrl, info: ValidationInfo) -> AnyHttpUrl:
        submitted(str(value), info)  # a denied address: 400 at submission
        return value


def _watch(ctx: StepContext[EmailWhenCompleteParams]) -> Any:
    params = ctx.params
    url = str(params.url)
    shown = redact_text(url)
    interval = params.interval or ctx.settings.poll_interval
    deadline = params.deadline or ctx.settings.notify_deadline
    since = float(ctx.state.get("since") or time.time())
    last = ctx.state.get("last_status")
    remaining = since + deadline - time.time()

    def ended(outcome: Outcome, reason: str | None, document: Any = None) -> dict[str, Any]:
        return {"outcome": outcome, "status": last, "document": document, "reason": reason}

    own = _own_job(ctx, url)
    if own is not None:  # a job of this prodinf: its end wakes this step, no HTTP look
        last = own.status
        if own.status in TERMINAL:
            return ended(Outcome.COMPLETE, None, _job_document(ctx, own, url))
        if remaining > 0:
            return ctx.wait(
                remaining,
                f"until job {own.id} ends (it is {own.status})",
                watch=Watch(job_watch_url(own.id), interval, params.max_errors),
                since=since,
                watching=True,
                last_status=own.status,
            )
    watched = ctx.state.get("watched")
    if isinstance(watched, dict):  # the shared watch woke this step
        last = watched.get("status") or last
        if watched.get("outcome") == Seen.COMPLETE:
            return ended(Outcome.COMPLETE, None, watched.get("document"))
        if watched.get("outcome") == Seen.REFUSED:
            raise AddressDenied(str(watched.get("reason")), field="url")
        return ended(Outcome.FAILED, watched.get("reason"))
    if remaining <= 0:
        return ended(Outcome.DEADLINE, f"{shown} did not finish within {_span(deadline)}")
    errors = 0
    if not ctx.state.get("watching"):
        # The first look is made here, so a URL that is already final is mailed at once.
        found = look(url, timeout=min(30.0, max(5.0, interval)), guard=Guard.of(ctx.settings))
        if found.outcome == Seen.REFUSED:
            raise AddressDenied(found.problem or f"{shown} is refused", field="url")
        if found.outcome == Seen.COMPLETE:
            last = found.status
            return ended(Outcome.COMPLETE, None, found.document)
        if found.outcome == Seen.FAILED:
            return ended(Outcome.FAILED, found.problem)
        if found.outcome == Seen.PENDING:
            last = found.status
        else:
            errors = 1
            if errors >= params.max_errors:
                return ended(Outcome.FAILED, f"gave up after 1 failed look: {found.problem}")
    return ctx.wait(
        remaining,
        f"{shown} is {last}" if last else f"watching {shown}",
        watch=Watch(url, interval, params.max_errors, errors),
        since=since,
        watching=True,
        last_status=last,
    )


#: The path of a job on a prodinf portal: ``/api/v1/jobs/<uuid>``.
_JOB_PATH = re.compile(r"/api/v1/jobs/([0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12})/?$")


def _own_job(ctx: StepContext[EmailWhenCompleteParams], url: str) -> Any:
    """The row of the job ``url`` names if it is a job of this prodinf's store (its id is
    a UUID: no other store holds it), else ``None``."""
    match = _JOB_PATH.search(urlsplit(url).path)
    if match is None:
        return None
    with ctx.transaction() as conn:
        return conn.execute(select(JOBS).where(JOBS.c.id == match[1])).first()


def _job_document(ctx: StepContext[EmailWhenCompleteParams], job: Any, url: str) -> Any:
    """What ``url?format=email`` answers for ``job``: the summary its notification mails."""
    parts = urlsplit(url)
    return mail_document(
        snapshot(job), ctx.settings.public_url or f"{parts.scheme}://{parts.netloc}"
    )


def _send(ctx: StepContext[EmailWhenCompleteParams]) -> dict[str, Any]:
    params = ctx.params
    watched: dict[str, Any] = ctx.outputs["watch"]
    document = watched.get("document")
    url = str(params.url)
    if (
        watched["outcome"] == Outcome.COMPLETE
        and isinstance(document, dict)
        and isinstance(document.get("subject"), str)
        and isinstance(document.get("body"), str)
    ):
        subject, text = document["subject"], document["body"]
        html = document["html"] if isinstance(document.get("html"), str) else None
    else:
        with composing("the mail reporting the URL"):
            subject, text, html = render_url_report(
                url, watched.get("status"), document, watched["outcome"], watched.get("reason")
            )
    mail = Mail(
        to=[params.address],
        subject=subject,
        text=text,
        html=html,
        message_id=f"<{ctx.job_id}.{ctx.step}@prodinf>",
        headers={"X-Prodinf-Job": ctx.job_id},
    )
    ctx.progress(f"mailing {params.address}")
    message_id = send_once(ctx, mail)
    return {"message_id": message_id, "to": params.address, "subject": subject}


def _report(ctx: StepContext[EmailWhenCompleteParams]) -> dict[str, Any]:
    params = ctx.params
    sent: dict[str, Any] = ctx.outputs["send"]
    if params.celery_task_id:
        backend = results_backend(ctx.settings.results_url)
        backend.store_result(params.celery_task_id, sent, "SUCCESS")
    return sent


def _span(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days != 1 else ''}"
    if seconds >= 3600:
        return f"{seconds / 3600:g} hours"
    return f"{seconds:g} seconds"


def _result(outputs: dict[str, Any]) -> dict[str, Any]:
    watched = outputs["watch"]
    return {**outputs["send"], "outcome": watched["outcome"], "status": watched["status"]}


@job_kind("email_when_complete", queue="email", params=EmailWhenCompleteParams, result=_result)
def email_when_complete(params: EmailWhenCompleteParams) -> Flow:
    """Wait until a URL reports a final status, then email the result to an address."""
    steps = [
        Step("watch", _watch, retry=Retry(attempts=20, backoff=5.0, max_backoff=600.0)),
        Step("send", _send, retry=DELIVERY),
    ]
    if params.celery_task_id:
        steps.append(Step("report", _report, retry=Retry(attempts=100, backoff=2.0)))
    return Flow(steps)
