"""``/api/v1/handovers`` and ``/api/v1/databases``: hand a database over to staging,
follow it stage by stage, stop and restart it; hand over many at once; see what a
server holds."""

from __future__ import annotations

import re
from typing import Any

from flask import request, url_for
from flask_restx import Namespace, Resource

from prodinf.exceptions import NotFound, ValidationError
from prodinf.kinds.handover import STAGES, Handovers
from prodinf.kinds.handover.checks import MAX_COMMENT, NOTIFY
from prodinf.kinds.handover.report import handover_detail, handover_status
from prodinf.kinds.handover.service import MAX_BULK
from prodinf.portal.access import acting_user
from prodinf.portal.api.jobs import ADDRESS, error, int_arg, job_url, json_object
from prodinf.portal.api.openapi import arg, array, nullable, obj, page_args, page_of
from prodinf.portal.current import runtime
from prodinf.status import HANDOVER_STATUS, HandoverStatus, JobStatus
from prodinf.store.handovers import get_bulk, list_handovers

ns = Namespace("handovers", description="Hand databases over to staging, stage by stage")
databases_ns = Namespace("databases", description="The databases a server holds")

#: What the ``status`` filter takes: a handover's words, and the jobs' statuses they mean.
STATUS_FILTER: dict[str, list[JobStatus]] = {
    str(status): [job for job, shown in HANDOVER_STATUS.items() if shown == status]
    for status in HandoverStatus
}

#: Text that holds something besides spaces, and no NUL.
FILLED = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
NOTIFY_WHEN = {
    "type": "string",
    "enum": list(NOTIFY),
    "default": "always",
    "description": "When the contact is mailed",
}
submission = ns.schema_model(
    "Handover",
    obj(
        {
            "src_uri": {
                "type": "string",
                "pattern": FILLED,
                "description": "The database: mysql://user:pass@host:port/name",
            },
            "contact": {**ADDRESS, "description": "Who is told how it ends"},
            "comment": {
                "type": "string",
                "pattern": FILLED,
                "maxLength": MAX_COMMENT,
                "description": "What this handover is",
            },
            "notify": NOTIFY_WHEN,
        },
        ["src_uri", "contact", "comment"],
    ),
)
bulk = ns.schema_model(
    "BulkHandover",
    obj(
        {
            "server_uri": {
                "type": "string",
                "pattern": FILLED,
                "description": "mysql://user:pass@host:port",
            },
            "databases": nullable(
                array(
                    {"type": "string", "minLength": 1},
                    maxItems=MAX_BULK,
                    description="Database names; or pattern, not both",
                )
            ),
            "pattern": nullable(
                {
                    "type": "string",
                    "pattern": FILLED,
                    "description": "A glob on the names: *_core_115_*",
                }
            ),
            "contact": {**ADDRESS, "description": "Who is told how each ends"},
            "comment": {"type": "string", "pattern": FILLED, "maxLength": MAX_COMMENT},
            "notify": NOTIFY_WHEN,
        },
        ["server_uri", "contact", "comment"],
    ),
)
restart = ns.schema_model(
    "Restart",
    obj({"from": {"type": "string", "enum": list(STAGES), "description": "Stage"}}, ["from"]),
)
SUMMARY = obj(
    {
        "token": {"type": "string"},
        "database": {"type": "string"},
        "status": {"type": "string", "enum": list(HandoverStatus)},
        "job_status": {"type": "string", "enum": list(JobStatus)},
        "message": nullable({"type": "string"}),
        "url": {"type": "string"},
    },
    ["token", "database", "status", "job_status", "url"],
)
handover_page = ns.schema_model(
    "HandoverPage",
    page_of(SUMMARY),
)
made = ns.schema_model(
    "HandoverMade",
    obj(
        {"token": {"type": "string"}, "url": {"type": "string"}, "page": {"type": "string"}},
        ["token", "url", "page"],
    ),
)
bulk_made = ns.schema_model(
    "BulkMade",
    obj(
        {
            "id": {"type": "string"},
            "server_uri": {"type": "string"},
            "answers": array(
                {
                    "type": "object",
                    "description": "{database, token, url} or {database, error, field}",
                }
            ),
            "url": {"type": "string"},
        },
        ["id", "answers", "url"],
    ),
)
bulk_document = ns.schema_model(
    "Bulk",
    obj({"id": {"type": "string"}, "handovers": array(SUMMARY)}, ["id", "handovers"]),
)
handover_document = ns.schema_model(
    "HandoverDocument",
    obj(
        {
            "token": {"type": "string"},
            "stages": array({"type": "object"}),
            "url": {"type": "string"},
            "page": {"type": "string"},
        },
        ["token", "stages", "url", "page"],
    ),
)
stopped = ns.schema_model(
    "HandoverStopped",
    obj(
        {
            "token": {"type": "string"},
            "status": {"type": "string", "enum": list(HandoverStatus)},
            "url": {"type": "string"},
        },
        ["token", "status", "url"],
    ),
)
database_list = databases_ns.schema_model(
    "DatabaseList",
    obj({"databases": array({"type": "object"})}, ["databases"]),
)


def handovers() -> Handovers:
    rt = runtime()
    return Handovers(rt.store, rt.registry, rt.settings, rt.publish)


def handover_url(token: str) -> str:
    return url_for("api.handovers_handover_item", token=token, _external=True)


def page_url(token: str) -> str:
    return url_for("handover_pages.handover", token=token, _external=True)


def _user() -> str | None:
    return acting_user()


def _summary(found: dict[str, Any]) -> dict[str, Any]:
    shown = {
        k: found[k]
        for k in (
            "token", "database", "dataset", "type", "release", "server", "staging",
            "contact", "bulk_id", "created_at", "finished_at",
        )
    }  # fmt: skip
    shown["status"] = handover_status(found["status"])
    shown["job_status"] = found["status"]
    shown["message"] = found["progress_message"]
    shown["url"] = handover_url(found["token"])
    return shown


@ns.route("")
class HandoverList(Resource):  # type: ignore[misc]
    @ns.doc(
        params={
            "database": arg("Only handovers of this database"),
            "type": arg("Only this type (core, ...)"),
            "release": arg("Only this release", "integer", minimum=0, maximum=999_999_999),
            "status": arg("Only handovers in this state", enum=list(STATUS_FILTER)),
            "contact": arg("Only this contact"),
            "bulk": arg("Only the handovers of this bulk"),
            **page_args("Handovers"),
        }
    )
    @ns.response(200, "A page of handovers, newest first", handover_page)
    @ns.response(400, "Bad filter; `field` names it", error)
    @ns.response(503, "The store is unavailable", error)
    def get(self) -> dict[str, Any]:
        """Handovers, newest first, filtered."""
        status = request.args.get("status") or None
        if status is not None and status not in STATUS_FILTER:
            raise ValidationError(
                f"status must be one of {', '.join(STATUS_FILTER)}", field="status"
            )
        release = request.args.get("release") or None
        if release is not None and not re.fullmatch("[0-9]{1,9}", release):
            raise ValidationError("release must be a number", field="release")
        limit = int_arg("limit", 50, 1, 500)
        offset = int_arg("offset", 0, 0, 10**9)
        items, total = list_handovers(
            runtime().store,
            database=request.args.get("database") or None,
            type=request.args.get("type") or None,
            release=int(release) if release else None,
            statuses=[str(s) for s in STATUS_FILTER[status]] if status else None,
            contact=request.args.get("contact") or None,
            bulk_id=request.args.get("bulk") or None,
            limit=limit,
            offset=offset,
        )
        return {"items": [_summary(h) for h in items], "total": total, "limit": limit,
                "offset": offset}  # fmt: skip

    @ns.expect(submission)
    @ns.response(201, "Checked and submitted: its token and page", made)
    @ns.response(400, "A check refused it; `field` names what, the message what to do", error)
    @ns.response(409, "The database has an unfinished handover (details: token, stage)", error)
    @ns.response(503, "Store or broker unavailable; nothing was submitted", error)
    def post(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Hand a database over: checked now, then healthcheck, copy, metadata, events."""
        made = handovers().submit(json_object(), submitted_by=_user())
        url = handover_url(made["token"])
        body = {**made, "url": url, "page": page_url(made["token"])}
        return body, 201, {"Location": url}


@ns.route("/bulk")
class BulkHandover(Resource):  # type: ignore[misc]
    @ns.expect(bulk)
    @ns.response(201, "Each database answered: its token, or why it was refused", bulk_made)
    @ns.response(400, "Bad request; `field` names what is wrong", error)
    @ns.response(503, "Store or broker unavailable", error)
    def post(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Hand over many databases of one server (a list or a pattern)."""
        made = handovers().bulk(json_object(), submitted_by=_user())
        url = url_for("api.handovers_bulk_item", bulk_id=made["id"], _external=True)
        for answer in made["answers"]:
            if answer.get("token"):
                answer["url"] = handover_url(answer["token"])
        return {**made, "url": url}, 201, {"Location": url}


@ns.route("/bulk/<string:bulk_id>")
class BulkItem(Resource):  # type: ignore[misc]
    @ns.response(200, "The bulk handover", bulk_document)
    @ns.response(404, "No such bulk", error)
    @ns.response(503, "The store is unavailable", error)
    def get(self, bulk_id: str) -> dict[str, Any]:
        """A bulk handover: what each database was answered, and each handover's stage."""
        store = runtime().store
        found = get_bulk(store, bulk_id)
        if found is None:
            raise NotFound(f"no bulk handover {bulk_id!r}", field="bulk_id")
        items, _ = list_handovers(store, bulk_id=bulk_id, limit=1000)
        return {**found, "handovers": [_summary(h) for h in items]}


@ns.route("/<string(length=36):token>")  # a job id: never "bulk"
class HandoverItem(Resource):  # type: ignore[misc]
    @ns.response(200, "The handover, stage by stage", handover_document)
    @ns.response(404, "No such handover", error)
    @ns.response(503, "The store is unavailable", error)
    def get(self, token: str) -> dict[str, Any]:
        """A handover: each stage with its status, start, end, job, report and error."""
        found = handover_detail(runtime().store, token)
        for stage in found["stages"]:
            job = stage["job"]
            if job is not None:
                job["url"] = job_url(job["id"])
                job["report"] = url_for("web.job", job_id=job["id"], _external=True)
        return {**found, "url": handover_url(token), "page": page_url(token)}


@ns.route("/<string(length=36):token>/stop")
class HandoverStop(Resource):  # type: ignore[misc]
    @ns.response(200, "Stopped", stopped)
    @ns.response(404, "No such handover", error)
    @ns.response(503, "Store or broker unavailable", error)
    @ns.response(409, "It has ended already", error)
    def post(self, token: str) -> dict[str, Any]:
        """Stop a handover; the job of the stage it is at is cancelled too."""
        stopped = handovers().stop(token, acting_user())
        return {"token": token, "status": handover_status(stopped["status"]),
                "url": handover_url(token)}  # fmt: skip


@ns.route("/<string(length=36):token>/restart")
class HandoverRestart(Resource):  # type: ignore[misc]
    @ns.expect(restart)
    @ns.response(200, "Running again from the stage", stopped)
    @ns.response(400, "No stage, or one it cannot run again from; `field` is from", error)
    @ns.response(404, "No such handover", error)
    @ns.response(503, "Store or broker unavailable", error)
    @ns.response(409, "It has not ended, or another handover of the database runs", error)
    def post(self, token: str) -> dict[str, Any]:
        """Run an ended handover again from a stage."""
        body = json_object()
        if "from" not in body:
            raise ValidationError(f"from is required: one of {', '.join(STAGES)}", field="from")
        made = handovers().restart(token, body["from"], acting_user())
        return {**made, "status": handover_status(made["status"]), "url": handover_url(token)}


@databases_ns.route("")
class DatabaseList(Resource):  # type: ignore[misc]
    @databases_ns.doc(
        params={
            "server_uri": {
                "in": "query",
                "type": "string",
                "required": True,
                "pattern": FILLED,
                "description": "The server: mysql://user:pass@host:port",
            }
        }
    )
    @databases_ns.response(200, "Its databases", database_list)
    @databases_ns.response(400, "No server_uri, or the server does not answer", error)
    def get(self) -> dict[str, Any]:
        """The server's databases that the naming rules read: type, release, and any
        handover in flight."""
        found = handovers().databases(request.args.get("server_uri"))
        for db in found["databases"]:
            if db["handover"]:
                db["handover"]["url"] = handover_url(db["handover"]["token"])
        return found
