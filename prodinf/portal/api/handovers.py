"""``/api/v1/handovers`` and ``/api/v1/databases``: hand a database over to staging,
follow it stage by stage, stop and restart it; hand over many at once; see what a
server holds."""

from __future__ import annotations

from typing import Any

from flask import request, url_for
from flask_restx import Namespace, Resource, fields

from prodinf.exceptions import NotFound, ValidationError
from prodinf.kinds.handover import STAGES, Handovers
from prodinf.kinds.handover.report import handover_detail, handover_status
from prodinf.portal.access import acting_user
from prodinf.portal.api.jobs import int_arg, job_url, json_object
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

submission = ns.model(
    "Handover",
    {
        "src_uri": fields.String(
            required=True, description="The database: mysql://user:pass@host:port/name"
        ),
        "contact": fields.String(required=True, description="Who is told how it ends"),
        "comment": fields.String(required=True, description="What this handover is"),
        "notify": fields.String(
            enum=["always", "failure"], description="When the contact is mailed (always)"
        ),
    },
)
bulk = ns.model(
    "BulkHandover",
    {
        "server_uri": fields.String(required=True, description="mysql://user:pass@host:port"),
        "databases": fields.List(fields.String, description="Database names, or:"),
        "pattern": fields.String(description="A glob on the names: *_core_115_*"),
        "contact": fields.String(required=True),
        "comment": fields.String(required=True),
        "notify": fields.String(enum=["always", "failure"]),
    },
)
restart = ns.model(
    "Restart", {"from": fields.String(required=True, enum=list(STAGES), description="Stage")}
)
error = ns.model("HandoverError", {"message": fields.String, "field": fields.String})


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
            "database": "Only handovers of this database",
            "type": "Only this type (core, ...)",
            "release": "Only this release",
            "status": f"One of {', '.join(STATUS_FILTER)}",
            "contact": "Only this contact",
            "bulk": "Only the handovers of this bulk",
            "limit": "Page size, 1-500 (default 50)",
            "offset": "Handovers to skip (default 0)",
        }
    )
    @ns.response(400, "Bad filter", error)
    def get(self) -> dict[str, Any]:
        """Handovers, newest first, filtered."""
        status = request.args.get("status") or None
        if status is not None and status not in STATUS_FILTER:
            raise ValidationError(
                f"status must be one of {', '.join(STATUS_FILTER)}", field="status"
            )
        release = request.args.get("release") or None
        if release is not None and not (release.isdigit() and len(release) <= 9):
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
    @ns.response(201, "Checked and submitted: its token and page")
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
    @ns.response(201, "Each database answered: its token, or why it was refused")
    @ns.response(400, "Bad request", error)
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
    @ns.response(404, "No such bulk", error)
    def get(self, bulk_id: str) -> dict[str, Any]:
        """A bulk handover: what each database was answered, and each handover's stage."""
        store = runtime().store
        found = get_bulk(store, bulk_id)
        if found is None:
            raise NotFound(f"no bulk handover {bulk_id!r}", field="bulk_id")
        items, _ = list_handovers(store, bulk_id=bulk_id, limit=1000)
        return {**found, "handovers": [_summary(h) for h in items]}


@ns.route("/<string:token>")
class HandoverItem(Resource):  # type: ignore[misc]
    @ns.response(404, "No such handover", error)
    def get(self, token: str) -> dict[str, Any]:
        """A handover: each stage with its status, start, end, job, report and error."""
        found = handover_detail(runtime().store, token)
        for stage in found["stages"]:
            job = stage["job"]
            if job is not None:
                job["url"] = job_url(job["id"])
                job["report"] = url_for("web.job", job_id=job["id"], _external=True)
        return {**found, "url": handover_url(token), "page": page_url(token)}


@ns.route("/<string:token>/stop")
class HandoverStop(Resource):  # type: ignore[misc]
    @ns.response(404, "No such handover", error)
    @ns.response(409, "It has ended already", error)
    def post(self, token: str) -> dict[str, Any]:
        """Stop a handover; the job of the stage it is at is cancelled too."""
        stopped = handovers().stop(token, acting_user())
        return {"token": token, "status": handover_status(stopped["status"]),
                "url": handover_url(token)}  # fmt: skip


@ns.route("/<string:token>/restart")
class HandoverRestart(Resource):  # type: ignore[misc]
    @ns.expect(restart)
    @ns.response(404, "No such handover", error)
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
    @databases_ns.doc(params={"server_uri": "The server: mysql://user:pass@host:port"})
    @databases_ns.response(400, "No server_uri, or the server does not answer", error)
    def get(self) -> dict[str, Any]:
        """The server's databases that the naming rules read: type, release, and any
        handover in flight."""
        found = handovers().databases(request.args.get("server_uri"))
        for db in found["databases"]:
            if db["handover"]:
                db["handover"]["url"] = handover_url(db["handover"]["token"])
        return found
