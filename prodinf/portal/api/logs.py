"""``/api/v1/jobs/<id>/logs``: what a job's steps logged, a page at a time or followed."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask_restx import Resource

from prodinf.exceptions import ValidationError
from prodinf.portal.api.jobs import error, int_arg, ns
from prodinf.portal.api.openapi import arg, array, obj
from prodinf.portal.current import runtime
from prodinf.store.steplogs import as_text, read_lines

__all__ = ["MAX_LIMIT"]

#: Most lines one answer holds.
MAX_LIMIT = 5000

log_line = obj(
    {
        "step": {"type": "string"},
        "attempt": {"type": "integer", "description": "1 for the step's first try"},
        "seq": {
            "type": "integer",
            "description": "Grows within the job in the order lines are stored",
        },
        "at": {"type": "string", "format": "date-time", "description": "When it was logged"},
        "level": {"type": "string", "description": "INFO, WARNING, ERROR, ..."},
        "logger": {"type": "string", "description": "prodinf.steps.<kind> for ctx.log"},
        "message": {"type": "string", "description": "With credentials masked"},
    },
    ["step", "attempt", "seq", "at", "level", "logger", "message"],
)
log_page = ns.schema_model(
    "LogPage",
    obj(
        {
            "items": array(log_line),
            "next_after": {
                "type": "integer",
                "description": "Pass as after= to get the lines stored since (the last seq, "
                "or the after given when there are none)",
            },
        },
        ["items", "next_after"],
    ),
)


@ns.route("/<string:job_id>/logs")
@ns.response(404, "No such job", error)
@ns.response(400, "Bad filter; `field` names it", error)
@ns.response(503, "The store is unavailable", error)
class JobLogs(Resource):  # type: ignore[misc]
    @ns.doc(
        params={
            "step": arg("Only this step's lines"),
            "attempt": arg(
                "Only this attempt's lines (1 for a step's first try)",
                "integer",
                minimum=1,
                maximum=10**6,
            ),
            "after": arg(
                "Only lines with a greater seq (pass next_after to follow a job)",
                "integer",
                blank=False,
                minimum=0,
                maximum=2**31 - 1,
                default=0,
            ),
            "limit": arg(
                f"Most lines, 1-{MAX_LIMIT} (default 1000)",
                "integer",
                blank=False,
                minimum=1,
                maximum=MAX_LIMIT,
                default=1000,
            ),
            "format": arg(
                "json (the default), or text: plain text, one line each",
                enum=["json", "text"],
            ),
        }
    )
    @ns.produces(["application/json", "text/plain"])
    @ns.response(200, "The lines, oldest first (as JSON, or as text)", log_page)
    def get(self, job_id: str) -> Any:
        """What the job's steps logged through ``ctx.log`` and ``logging`` while they ran,
        oldest first: each attempt keeps its newest 500 lines, credentials masked."""
        step = request.args.get("step") or None
        attempt = int_arg("attempt", 0, 1, 10**6) if request.args.get("attempt") else None
        after = int_arg("after", 0, 0, 2**31 - 1)
        limit = int_arg("limit", 1000, 1, MAX_LIMIT)
        shape = request.args.get("format") or "json"
        if shape not in ("json", "text"):
            raise ValidationError("format must be json (the default) or text", field="format")
        items = read_lines(
            runtime().store, job_id, step=step, attempt=attempt, after=after, limit=limit
        )
        if shape == "text":
            return Response(as_text(items), mimetype="text/plain")
        return {"items": items, "next_after": items[-1]["seq"] if items else after}
