"""``notify`` on any job: what a submission may ask for, and the notification job that a
finishing job leaves behind.

A job submitted with ``"notify": {"email": [...], "webhook": "https://..."}`` gets,
in the very transaction that records its terminal status, a ``job_notification``
job on the email queue carrying a snapshot of how it ended. The notification
cannot be lost (it is committed with the status) and cannot re-run the job (it
is a job of its own, with its own retries).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from prodinf.addresses import validate_address
from prodinf.config import Settings
from prodinf.engine.newjob import new_job
from prodinf.engine.registry import Registry
from prodinf.exceptions import ValidationError
from prodinf.limits import HttpUrlParam
from prodinf.redact import redact
from prodinf.status import JobStatus
from prodinf.store.rows import NewRows

__all__ = ["NOTIFICATION_KIND", "NotifySpec", "notification_job", "parse_notify", "snapshot"]

log = logging.getLogger(__name__)

#: The kind of the job that delivers a finished job's notifications.
NOTIFICATION_KIND = "job_notification"
#: Most addresses one job may notify.
MAX_ADDRESSES = 50


class NotifySpec(BaseModel):
    """Who hears about a job's terminal state: email addresses and/or a webhook."""

    model_config = ConfigDict(extra="forbid")

    email: list[str] = Field(
        default_factory=list,
        max_length=MAX_ADDRESSES,
        title="Email addresses",
        description="Addresses mailed a summary when the job ends.",
    )
    webhook: HttpUrlParam | None = Field(
        default=None,
        title="Webhook URL",
        description="URL sent a signed JSON summary (POST) when the job ends.",
    )
    when: Literal["always", "failure"] = Field(
        default="always",
        title="When",
        description="always: at every end; failure: only when the job did not succeed.",
    )

    @field_validator("email")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [validate_address(item, field=f"notify.email.{i}") for i, item in enumerate(value)]

    @model_validator(mode="after")
    def _something(self) -> NotifySpec:
        if not self.email and self.webhook is None:
            raise ValueError("give email addresses, a webhook, or both")
        return self


def parse_notify(raw: Any, registry: Registry) -> dict[str, Any] | None:
    """The ``notify`` of a submission as stored, or ``None``; ``ValidationError`` naming
    the field (``notify.email.0``, ``notify.webhook``, ...) if it is not valid."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValidationError("notify must be a JSON object", field="notify")
    if NOTIFICATION_KIND not in registry:
        raise ValidationError(
            f"notify needs the {NOTIFICATION_KIND} kind, which this prodinf has not loaded",
            field="notify",
        )
    try:
        # A bad address raises our own ValidationError (naming notify.email.<i>)
        # straight through pydantic, which wraps only ValueError.
        spec = NotifySpec.model_validate(raw)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        field = f"notify.{where}" if where else "notify"
        raise ValidationError(f"{field}: {first['msg']}", field=field) from None
    return spec.model_dump(mode="json", exclude_defaults=True)


class _Ended(Protocol):
    """What :func:`snapshot` reads of a job row (a ``JobRow`` or the runner's locked copy)."""

    id: str
    kind: str
    status: str
    params: dict[str, Any]
    result: Any
    error: dict[str, Any] | None
    progress_message: str | None
    submitted_by: str | None
    created_at: datetime
    finished_at: datetime | None


def snapshot(job: _Ended) -> dict[str, Any]:
    """How a job ended, as its notification reports it (JSON-ready); its params with
    credentials masked, for a mail that names what the job worked on (a handover's)."""
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "params": redact(job.params),
        "result": job.result,
        "error": job.error,
        "message": job.progress_message,
        "submitted_by": job.submitted_by,
        "created_at": _iso(job.created_at),
        "finished_at": _iso(job.finished_at),
    }


def notification_job(
    registry: Registry,
    settings: Settings,
    job: dict[str, Any],
    notify: dict[str, Any],
    now: datetime,
) -> NewRows | None:
    """The ``job_notification`` job reporting ``job`` (a :func:`snapshot`) to ``notify``.

    ``None`` (and an error logged) if the kind is gone or ``notify`` no longer
    validates, which only a change of code between submission and end can cause:
    the finishing job must still finish.
    """
    if notify.get("when") == "failure" and job["status"] == JobStatus.SUCCEEDED:
        return None
    targets = {k: v for k, v in notify.items() if k != "when"}
    try:
        kind = registry.get(NOTIFICATION_KIND)
        params = kind.validate({**targets, "job": job})
        flow = kind.flow(params)
    except Exception:
        log.exception("job %s: cannot notify %s", job["id"], notify)
        return None
    return new_job(
        kind,
        params.model_dump(mode="json"),
        flow,
        settings,
        now,
        idempotency_key=f"notify:{job['id']}:{job['status']}:{job['finished_at']}",
        submitted_by=f"prodinf:job {job['id']}",
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
