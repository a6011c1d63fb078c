"""``job_notification``: tell a finished job's ``notify`` targets how it ended.

prodinf creates this job itself, on the email queue, in the transaction that
records another job's terminal status (see :mod:`prodinf.engine.notices`). Its
params carry a snapshot of that job, so it reports the end it was made for even
if the job is retried later. Two independent steps:

``email``
    Mails a summary (text and HTML) to every address, once (a handover's contact gets
    the handover report, :func:`prodinf.mail.render_handover_report`): the delivery is
    recorded (``send_once``) the moment the server accepts it, under a Message-ID
    made from this job's id. A mail
    server that is down is retried with backoff until it takes the mail.
``webhook``
    POSTs ``{"event", "delivery", "job"}`` as signed JSON (:mod:`prodinf.webhooks`),
    retried with backoff for up to :data:`WEBHOOK_DEADLINE` seconds while the
    receiver is down, slow or answers 5xx; a 4xx fails the step at once.

Either failing fails this job only: the job it reports on is never run again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prodinf import Flow, Retry, Step, StepContext, job_kind
from prodinf.addresses import validate_address
from prodinf.engine.notices import NOTIFICATION_KIND
from prodinf.kinds.handover.kind import HANDOVER_KIND
from prodinf.kinds.mailing import DELIVERY, composing, send_once
from prodinf.limits import HttpUrlParam
from prodinf.mail import Mail, render_handover_report, render_job_report
from prodinf.redact import redact
from prodinf.webhooks import post

__all__ = [
    "WEBHOOK_DEADLINE",
    "JobNotificationParams",
    "job_mail",
    "mail_document",
    "notice_flow",
    "notice_result",
]

#: How long a webhook receiver that keeps failing is retried: 3 days.
WEBHOOK_DEADLINE = 3 * 86400.0
#: A step's function, as ``Step`` takes it.
StepFn = Callable[[StepContext[Any]], Any]
WEBHOOK = Retry(attempts=100_000, backoff=2.0, max_backoff=600.0, deadline=WEBHOOK_DEADLINE)


class JobNotificationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: dict[str, Any] = Field(description="How the job ended (a snapshot made by prodinf).")
    email: list[str] = Field(default_factory=list, description="Addresses to mail.")
    webhook: HttpUrlParam | None = Field(default=None, description="URL to POST the summary to.")

    @field_validator("job")
    @classmethod
    def _job(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in ("id", "kind", "status"):
            if not isinstance(value.get(key), str):
                raise ValueError(f"needs a text {key!r}")
        return value

    @field_validator("email")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [validate_address(item, field=f"params.email.{i}") for i, item in enumerate(value)]

    @model_validator(mode="after")
    def _something(self) -> JobNotificationParams:
        if not self.email and self.webhook is None:
            raise ValueError("give email addresses, a webhook, or both")
        return self


def _links(ctx: StepContext[JobNotificationParams], job_id: str) -> tuple[str | None, str | None]:
    """The job's page and API document, when the portal's public address is set."""
    base = ctx.settings.public_url
    if base is None:
        return None, None
    return f"{base}/jobs/{job_id}", f"{base}/api/v1/jobs/{job_id}"


def job_mail(job: dict[str, Any], public_url: str | None) -> tuple[str, str, str]:
    """The subject, text and HTML that report how ``job`` (a notification snapshot)
    ended: a handover's report for a handover (the database, each stage, what failed
    and why, linked to /handovers/<token>), else the job summary linking its page.
    What a job's ``notify`` mails, and ``GET /api/v1/jobs/<id>?format=email`` answers."""
    if job["kind"] == HANDOVER_KIND:
        return render_handover_report(job, public_url)
    return render_job_report(job, f"{public_url}/jobs/{job['id']}" if public_url else None)


def mail_document(job: dict[str, Any], public_url: str | None) -> dict[str, Any]:
    """``{id, status, subject, body, html}``: ``job`` (a notification snapshot) and the
    mail of its end, what ``GET /api/v1/jobs/<id>?format=email`` answers and
    ``email_when_complete`` on a job of this prodinf mails."""
    subject, text, html = job_mail(job, public_url)
    return {"id": job["id"], "status": job["status"], "subject": subject, "body": text,
            "html": html}  # fmt: skip


def _email(ctx: StepContext[JobNotificationParams]) -> dict[str, Any]:
    params = ctx.params
    job = params.job
    with composing("the mail reporting the job"):
        subject, text, html = job_mail(job, ctx.settings.public_url)
    mail = Mail(
        to=list(params.email),
        subject=subject,
        text=text,
        html=html,
        message_id=f"<{ctx.job_id}.{ctx.step}@prodinf>",
        headers={"X-Prodinf-Job": job["id"]},
    )
    ctx.progress(f"mailing {', '.join(params.email)}")
    message_id = send_once(ctx, mail)
    return {"message_id": message_id, "to": list(params.email), "subject": subject}


def _webhook(ctx: StepContext[JobNotificationParams]) -> dict[str, Any]:
    params = ctx.params
    # The snapshot's params are for the mail; the webhook document stays as it was.
    job = redact({k: v for k, v in params.job.items() if k != "params"})
    _, api = _links(ctx, job["id"])
    event = f"job.{job['status']}"
    document = {"event": event, "delivery": ctx.job_id, "job": {**job, "url": api}}
    ctx.progress(f"calling the webhook ({event})")
    return ctx.once(
        "delivered",
        lambda: post(
            str(params.webhook),
            document,
            event=event,
            delivery=ctx.job_id,
            settings=ctx.settings,
        ),
    )


def notice_result(outputs: dict[str, Any]) -> dict[str, Any]:
    """The result of a notice job: what its ``email`` and ``webhook`` steps did."""
    return {name: outputs[name] for name in ("email", "webhook") if name in outputs}


def notice_flow(email: StepFn | None, webhook: StepFn | None) -> Flow:
    """An ``email`` and a ``webhook`` step (those given), independent of each other:
    either failing fails the notice only. Delivery is retried while the mail server or
    the receiver is down."""
    steps = []
    if email is not None:
        steps.append(Step("email", email, retry=DELIVERY, after=()))
    if webhook is not None:
        steps.append(Step("webhook", webhook, retry=WEBHOOK, after=()))
    return Flow(steps)


@job_kind(
    NOTIFICATION_KIND,
    queue="email",
    params=JobNotificationParams,
    result=notice_result,
    internal=True,
)
def job_notification(params: JobNotificationParams) -> Flow:
    """Mail and/or call a webhook with how another job ended (made by prodinf for `notify`)."""
    return notice_flow(
        _email if params.email else None, _webhook if params.webhook is not None else None
    )
