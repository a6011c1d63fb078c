"""``event_notice``: the email or signed webhook a subscription sends about an event.

A subscription whose ``run`` is ``email: [addresses]`` (with an optional
``subject``) or ``webhook: URL`` starts this job as its process, on the email
queue. The mail is sent once (``send_once``: recorded the moment the server accepts
it, under a Message-ID made from this job's id), a server that is down retried
with backoff; the webhook POSTs ``{"event": "event.<type>", "delivery",
"subscription", "data"}`` as signed JSON (:mod:`prodinf.webhooks`), retried while
the receiver is down, failed at once by a 4xx.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prodinf import Flow, StepContext, job_kind
from prodinf.addresses import validate_address
from prodinf.kinds.job_notification import notice_flow, notice_result
from prodinf.kinds.mailing import composing, send_once
from prodinf.kinds.subscriptions import NOTICE_KIND
from prodinf.limits import HttpUrlParam
from prodinf.mail import Mail, render_event_report
from prodinf.redact import redact
from prodinf.webhooks import post

__all__ = ["EventNoticeParams"]


class EventNoticeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscription: str = Field(description="The subscription that sends it.")
    event: dict[str, Any] = Field(description="The event (id, type, dataset, payload, source).")
    email: list[str] = Field(default_factory=list, description="Addresses to mail.")
    subject: str | None = Field(default=None, description="The mail's subject.")
    webhook: HttpUrlParam | None = Field(default=None, description="URL to POST the event to.")

    @field_validator("email")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [validate_address(item, field=f"params.email.{i}") for i, item in enumerate(value)]

    @model_validator(mode="after")
    def _something(self) -> EventNoticeParams:
        if not self.email and self.webhook is None:
            raise ValueError("give email addresses or a webhook")
        return self


def _link(ctx: StepContext[EventNoticeParams]) -> str | None:
    base = ctx.settings.public_url
    return f"{base}/events/{ctx.params.event['id']}" if base else None


def _email(ctx: StepContext[EventNoticeParams]) -> dict[str, Any]:
    params = ctx.params
    with composing("the mail about the event"):
        subject, text, html = render_event_report(
            params.event, params.subscription, _link(ctx), params.subject
        )
    mail = Mail(
        to=list(params.email),
        subject=subject,
        text=text,
        html=html,
        message_id=f"<{ctx.job_id}.{ctx.step}@prodinf>",
        headers={"X-Prodinf-Event": str(params.event["id"])},
    )
    ctx.progress(f"mailing {', '.join(params.email)}")
    return {"message_id": send_once(ctx, mail), "to": list(params.email), "subject": subject}


def _webhook(ctx: StepContext[EventNoticeParams]) -> dict[str, Any]:
    params = ctx.params
    event = f"event.{params.event['type']}"
    document = {
        "event": event,
        "delivery": ctx.job_id,
        "subscription": params.subscription,
        "data": {**redact(params.event), "url": _link(ctx)},
    }
    ctx.progress(f"calling the webhook ({event})")
    return ctx.once(
        "delivered",
        lambda: post(
            str(params.webhook), document, event=event, delivery=ctx.job_id, settings=ctx.settings
        ),
    )


@job_kind(NOTICE_KIND, queue="email", params=EventNoticeParams, result=notice_result, internal=True)
def event_notice(params: EventNoticeParams) -> Flow:
    """Mail and/or POST a signed webhook about an event (a subscription's process)."""
    return notice_flow(
        _email if params.email else None, _webhook if params.webhook is not None else None
    )
