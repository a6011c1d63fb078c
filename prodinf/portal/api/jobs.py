"""``/api/v1/jobs``: submit, list, show, cancel and retry jobs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flask import request, url_for
from flask_restx import Namespace, Resource

from prodinf.engine.notices import MAX_ADDRESSES
from prodinf.engine.service import MAX_KEY_LENGTH, MAX_SUBMITTED_BY
from prodinf.exceptions import ValidationError
from prodinf.kinds.job_notification import mail_document
from prodinf.portal.access import acting_user, shown
from prodinf.portal.api.openapi import (
    ERROR,
    JOB_SUMMARY,
    TRIMMED,
    arg,
    array,
    nullable,
    obj,
    page_args,
    text,
)
from prodinf.portal.current import runtime
from prodinf.status import JobStatus
from prodinf.store.search import ORDERS, SORTS, parse_when

ns = Namespace("jobs", description="Jobs: submit work and follow it")

#: Every status a job can have.
STATUSES = tuple(JobStatus)
SUBMISSION_FIELDS = {"kind", "params", "idempotency_key", "submitted_by", "notify"}

#: What ``validate_address`` takes: a bare address, ASCII, a dot-atom before the @.
ADDRESS = {
    "type": "string",
    "format": "email",
    "maxLength": 254,
    "description": "An email address (ada@example.org)",
}
HTTP_URL = {"type": "string", "format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"}
NOTIFY = obj(
    {
        "email": array(ADDRESS, maxItems=MAX_ADDRESSES, description="Addresses mailed a summary"),
        "webhook": nullable(
            {**HTTP_URL, "description": "URL sent a signed JSON summary (POST) when the job ends"}
        ),
        "when": {
            "type": "string",
            "enum": ["always", "failure"],
            "description": "always (the default): at every end; failure: unless it succeeded",
        },
    },
    closed=True,
    minProperties=1,
    description="Who to tell when the job ends (succeeded, failed, cancelled or reverted): "
    "email addresses, a webhook, or both; delivered from the email queue",
)
submission = ns.schema_model(
    "Submission",
    obj(
        {
            "kind": {
                "type": "string",
                "minLength": 1,
                "description": "A kind this prodinf runs (GET /kinds)",
            },
            "params": nullable(
                {"type": "object", "description": "Valid against the kind's schema"}
            ),
            "idempotency_key": nullable(
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_KEY_LENGTH,
                    "pattern": TRIMMED,
                    "description": "Submitting the same key again returns the existing job "
                    "(200) instead of a new one; no spaces around it",
                }
            ),
            "submitted_by": nullable(
                text(MAX_SUBMITTED_BY, description="Who submitted the job (PRODINF_AUTH=none)")
            ),
            "notify": nullable(NOTIFY),
        },
        ["kind"],
        closed=True,
    ),
)
created = ns.schema_model(
    "Created",
    obj(
        {
            "id": {"type": "string"},
            "url": {"type": "string", "description": "The job in the API"},
            "status": {"type": "string", "enum": list(STATUSES)},
        },
        ["id", "url", "status"],
    ),
)
job_page = ns.schema_model(
    "JobPage",
    obj(
        {
            "items": array(
                {
                    **JOB_SUMMARY,
                    "properties": {
                        **JOB_SUMMARY["properties"],
                        "duration_seconds": nullable(
                            {"type": "number", "description": "Started to ended, or to now"}
                        ),
                    },
                }
            ),
            "total": {
                "type": "integer",
                "description": "How many match; when total_exact is false, at least this many "
                "(counting stops at 10,000)",
            },
            "total_exact": {"type": "boolean"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
            "next": nullable({"type": "string", "description": "The next page, if any"}),
            "previous": nullable({"type": "string", "description": "The page before, if any"}),
        },
        ["items", "total", "total_exact", "limit", "offset", "next", "previous"],
    ),
)
job_summary = ns.schema_model("JobSummary", JOB_SUMMARY)
job_document = ns.schema_model(
    "Job",
    obj(
        {
            **JOB_SUMMARY["properties"],
            "queue": {"type": "string"},
            "params": {"type": "object"},
            "idempotency_key": nullable({"type": "string"}),
            "started_at": nullable({"type": "string", "format": "date-time"}),
            "next_run_at": nullable({"type": "string", "format": "date-time"}),
            "next_look_at": nullable({"type": "string", "format": "date-time"}),
            "cancel_requested": {"type": "boolean"},
            "result": {"description": "What the job made (any JSON), once it succeeded"},
            "error": nullable({"type": "object", "description": "Why it failed"}),
            "notify": nullable({"type": "object"}),
            "parent": {"description": "The job whose step started this one, or null"},
            "steps": array({"type": "object"}),
            "history": array({"type": "object"}),
            # ?format=email
            "subject": {"type": "string"},
            "body": {"type": "string"},
            "html": {"type": "string"},
        },
        ["id", "status"],
        description="A job; with ?format=email its id, status, subject, body and html only",
    ),
)
error = ns.add_model(ERROR.name, ERROR)


def job_url(job_id: str) -> str:
    return url_for("api.jobs_job_item", job_id=job_id, _external=True)


def with_url(job: dict[str, Any]) -> dict[str, Any]:
    return {**job, "url": job_url(job["id"])}


def json_object() -> dict[str, Any]:
    """The request's JSON body; a 400 naming ``body`` unless it is a JSON object."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # silent covers malformed JSON, not JSON nested too deep
        raise ValidationError("the request body is nested too deeply", field="body") from None
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object", field="body")
    return body


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """The query arg ``name``, an integer from ``low`` to ``high`` (``default`` when
    absent); a 400 naming it otherwise, an empty value included."""
    raw = request.args.get(name)
    if raw is None:
        return default
    # int() would also take " 5", "+5", "5_0" and other scripts' digits
    if not re.fullmatch(r"-?[0-9]{1,12}", raw):
        raise ValidationError(f"{name} must be an integer", field=name)
    value = int(raw)
    if not low <= value <= high:
        raise ValidationError(f"{name} must be between {low} and {high}", field=name)
    return value


def cursor_args() -> tuple[str | None, str | None]:
    """The query args ``after`` and ``before`` (a page's cursors); a 400 naming one that
    is empty or too long, or both given."""
    found: dict[str, str | None] = {}
    for name in ("after", "before"):
        raw = request.args.get(name)
        if raw is not None and not 0 < len(raw) <= 400:
            raise ValidationError(f"{name} must be a cursor from a page's links", field=name)
        found[name] = raw
    if found["after"] is not None and found["before"] is not None:
        raise ValidationError("give after or before, not both", field="before")
    return found["after"], found["before"]


def bool_arg(name: str) -> bool:
    """The query arg ``name``: true, false (absent or empty: false); a 400 naming it
    otherwise."""
    raw = (request.args.get(name) or "false").lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ValidationError(f"{name} must be true or false", field=name)
    return raw in ("true", "1", "yes")


def job_search(
    args: Mapping[str, str],
    *,
    after: str = "created_after",
    before: str = "created_before",
    whole_days: bool = False,
) -> dict[str, Any]:
    """The filters and order a request asks the job list for, as ``list_jobs`` keywords:
    ``kind``, ``status``, ``id`` (a start of the id), ``q`` (text in the params),
    ``submitted_by``, the creation range (args ``after`` and ``before``: ISO 8601; with
    ``whole_days``, a date alone in ``before`` takes all of that day), ``sort`` and
    ``order``. A bad value is a 400 naming its arg."""
    status = args.get("status") or None
    if status is not None and status not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}", field="status")
    sort = args.get("sort") or "created"
    if sort not in SORTS:
        raise ValidationError(f"sort must be one of {', '.join(SORTS)}", field="sort")
    order = args.get("order") or "desc"
    if order not in ORDERS:
        raise ValidationError("order must be asc or desc", field="order")
    start, end = args.get(after) or None, args.get(before) or None
    return {
        "kind": args.get("kind") or None,
        "status": status,
        "id_prefix": args.get("id") or None,
        "text": args.get("q") or None,
        "submitted_by": args.get("submitted_by") or None,
        "created_after": parse_when(start, after) if start else None,
        "created_before": parse_when(end, before, end_of_day=whole_days) if end else None,
        "sort": sort,
        "order": order,
    }


@ns.route("")
class JobList(Resource):  # type: ignore[misc]
    @ns.doc(
        params={
            "kind": arg("Only jobs of this kind"),
            "status": arg("Only jobs in this status", enum=list(STATUSES)),
            "id": arg("Only jobs whose id starts with this (any case)"),
            "q": arg(
                "Only jobs whose params hold this text, ignoring case (a database name); "
                "passwords are masked before matching"
            ),
            "submitted_by": arg("Only jobs submitted by this user (the whole name, any case)"),
            "created_after": arg(
                "Only jobs created at or after this ISO 8601 time (UTC unless it names a "
                "zone; a date alone is its midnight)",
                format="date-time",
            ),
            "created_before": arg(
                "Only jobs created before this ISO 8601 time", format="date-time"
            ),
            "sort": arg(
                "created (the default), updated, or duration (started to ended, or to now; "
                "jobs never started last)",
                enum=list(SORTS),
            ),
            "order": arg("desc (the default) or asc", enum=list(ORDERS)),
            **page_args("Jobs"),
            "after": arg("The page after this cursor (what a page's next link carries)"),
            "before": arg("The page before this cursor (what a page's previous link carries)"),
        }
    )
    @ns.response(
        200, "A page of jobs; next and previous: the pages' URLs, if there are any", job_page
    )
    @ns.response(400, "Bad filter; `field` names it", error)
    @ns.response(503, "The store is unavailable", error)
    def get(self) -> dict[str, Any]:
        """Jobs, newest first, filtered and sorted, a page at a time. Each has
        ``duration_seconds``: how long it has run (null until it starts)."""
        search = job_search(request.args)
        limit = int_arg("limit", 50, 1, 500)
        offset = int_arg("offset", 0, 0, 10**9)
        after, before = cursor_args()
        page = runtime().store.find_jobs(
            **search, limit=limit, offset=offset, after=after, before=before
        )
        kept = {k: v for k, v in request.args.items() if k not in ("offset", "after", "before")}

        def link(**cursor: str | None) -> str | None:
            if not any(cursor.values()):
                return None
            return url_for("api.jobs_job_list", **kept, **cursor, _external=True)

        return {
            "items": [with_url(job) for job in page["items"]],
            "total": page["total"],
            "total_exact": page["total_exact"],
            "limit": limit,
            "offset": offset,
            "next": link(after=page["next"]),
            "previous": link(before=page["previous"]),
        }

    @ns.expect(submission)
    @ns.response(201, "Created", created)
    @ns.response(200, "A job with this idempotency key exists", created)
    @ns.response(400, "Invalid submission; `field` names what is wrong", error)
    @ns.response(409, "This idempotency key was used for a job of another kind", error)
    @ns.response(503, "Store or broker unavailable; nothing was submitted", error)
    def post(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Submit a job. A 2xx answer means it is stored and its message is in the broker."""
        body = json_object()
        unknown = sorted(set(body) - SUBMISSION_FIELDS)
        if unknown:
            raise ValidationError(f"unknown field {unknown[0]!r}", field=unknown[0])
        kind = body.get("kind")
        if not isinstance(kind, str) or not kind:
            raise ValidationError("kind is required and must be a string", field="kind")
        submitted_by = body.get("submitted_by")
        if submitted_by is not None and not isinstance(submitted_by, str):
            raise ValidationError("submitted_by must be a string", field="submitted_by")
        # The user header is another way to say submitted_by; submit holds either
        # to the same limits.
        job, is_new = runtime().jobs.submit(
            kind,
            body.get("params"),
            idempotency_key=body.get("idempotency_key"),
            submitted_by=acting_user(submitted_by),
            notify=body.get("notify"),
        )
        url = job_url(job["id"])
        return (
            {"id": job["id"], "url": url, "status": job["status"]},
            201 if is_new else 200,
            {"Location": url},
        )


@ns.route("/<string:job_id>")
@ns.response(404, "No such job", error)
@ns.response(503, "The store is unavailable", error)
class JobItem(Resource):  # type: ignore[misc]
    @ns.doc(
        params={
            "format": arg(
                "json (the default), or email: a short {id, status, subject, body, html} summary",
                enum=["json", "email"],
                blank=False,
            )
        }
    )
    @ns.response(200, "The job", job_document)
    @ns.response(400, "A bad format", error)
    def get(self, job_id: str) -> dict[str, Any]:
        """A job: status, progress, steps, result, error and history; with
        ``?format=email``, its status and the summary its notification mails (what
        ``email_when_complete`` on this URL sends)."""
        detail = shown(runtime().store.describe(job_id))
        shape = request.args.get("format")
        if shape is None or shape == "json":
            return with_url(detail)
        if shape != "email":
            raise ValidationError("format must be json (the default) or email", field="format")
        return email_summary(detail)


def email_summary(detail: dict[str, Any]) -> dict[str, Any]:
    """``{status, subject, body, html}``: the job's status and the mail of its end (the
    job's state so far while it runs)."""
    keys = ("id", "kind", "status", "params", "result", "error", "submitted_by")
    job = {key: detail.get(key) for key in keys}
    job.update(
        message=detail["progress"]["message"],
        created_at=detail["created_at"],
        finished_at=detail.get("finished_at"),
    )
    return mail_document(job, runtime().settings.public_url or request.host_url.rstrip("/"))


@ns.route("/<string:job_id>/cancel")
@ns.response(404, "No such job", error)
@ns.response(409, "The job has already finished", error)
@ns.response(503, "Store or broker unavailable", error)
class JobCancel(Resource):  # type: ignore[misc]
    @ns.response(200, "Cancelled, or to stop after its current step", job_summary)
    def post(self, job_id: str) -> dict[str, Any]:
        """Cancel a job: at once if queued or waiting, after its current step if running."""
        return with_url(runtime().jobs.cancel(job_id, acting_user()))


@ns.route("/<string:job_id>/retry")
@ns.response(404, "No such job", error)
@ns.response(409, "Only a failed, reverted or cancelled job can be retried", error)
@ns.response(503, "Store or broker unavailable", error)
class JobRetry(Resource):  # type: ignore[misc]
    @ns.response(200, "Queued again", job_summary)
    def post(self, job_id: str) -> dict[str, Any]:
        """Run a failed job again from its failed step; succeeded steps are not re-run."""
        return with_url(runtime().jobs.retry(job_id, acting_user()))
