"""``/api/v1/notifications``: "email me when this URL reports a result"."""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource

from prodinf.engine.service import MAX_KEY_LENGTH
from prodinf.exceptions import ValidationError
from prodinf.portal.access import acting_user
from prodinf.portal.api.jobs import ADDRESS, HTTP_URL, error, job_url, json_object
from prodinf.portal.api.openapi import TRIMMED, nullable, obj
from prodinf.portal.current import runtime

ns = Namespace("notifications", description="Email an address when a URL reports a result")

FIELDS = {"url", "address", "interval", "idempotency_key"}

notification = ns.schema_model(
    "Notification",
    obj(
        {
            "url": {
                **HTTP_URL,
                "maxLength": 2083,
                "description": "A URL answering JSON whose `status` says whether it is done "
                "(a prodinf job URL works)",
            },
            "address": {**ADDRESS, "description": "Where to send the email"},
            "interval": nullable(
                {
                    "type": "number",
                    "minimum": 0.1,
                    "maximum": 86400,
                    "description": "Seconds between looks (default PRODINF_POLL_INTERVAL)",
                }
            ),
            "idempotency_key": nullable(
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_KEY_LENGTH,
                    "pattern": TRIMMED,
                    "description": "Submitting the same key again returns the existing "
                    "notification",
                }
            ),
        },
        ["url", "address"],
        closed=True,
    ),
)
created = ns.schema_model(
    "NotificationCreated",
    obj(
        {"id": {"type": "string"}, "url": {"type": "string", "description": "Its job"}},
        ["id", "url"],
    ),
)


def submit_notification(
    body: dict[str, Any], submitted_by: str | None
) -> tuple[dict[str, Any], bool]:
    """Submit an ``email_when_complete`` job; errors name ``url``/``address``, not ``params.*``."""
    params = {k: body[k] for k in ("url", "address", "interval") if body.get(k) is not None}
    interval = params.get("interval")
    if interval is not None and (
        isinstance(interval, bool) or not isinstance(interval, int | float)
    ):
        # pydantic would take "5" or true for a number of seconds; the document says number
        raise ValidationError("interval must be a number of seconds", field="interval")
    for name in ("url", "address"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            raise ValidationError(f"{name} is required", field=name)
    try:
        return runtime().jobs.submit(
            "email_when_complete",
            params,
            idempotency_key=body.get("idempotency_key"),
            submitted_by=submitted_by,
        )
    except ValidationError as exc:
        field = (
            exc.field[len("params.") :]
            if exc.field and exc.field.startswith("params.")
            else exc.field
        )
        raise ValidationError(exc.message.replace("params.", ""), field=field) from None


@ns.route("")
class NotificationList(Resource):  # type: ignore[misc]
    @ns.expect(notification)
    @ns.response(201, "Created: a job to follow like any other", created)
    @ns.response(200, "A notification with this idempotency key exists", created)
    @ns.response(400, "Invalid input; `field` names what is wrong", error)
    @ns.response(409, "This idempotency key was used for a job of another kind", error)
    @ns.response(503, "Store or broker unavailable; nothing was submitted", error)
    def post(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Email ``address`` once ``url`` reports a final status."""
        body = json_object()
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            raise ValidationError(f"unknown field {unknown[0]!r}", field=unknown[0])
        job, is_new = submit_notification(body, acting_user(body.get("submitted_by")))
        url = job_url(job["id"])
        return {"id": job["id"], "url": url}, 201 if is_new else 200, {"Location": url}
