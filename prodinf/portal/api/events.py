"""``/api/v1/events`` and ``/api/v1/subscriptions``: record what happened to a dataset,
see which processes it started, and how they stand."""

from __future__ import annotations

from typing import Any

from flask import request, url_for
from flask_restx import Namespace, Resource

from prodinf.engine.service import MAX_KEY_LENGTH
from prodinf.exceptions import NotFound, ValidationError
from prodinf.kinds.event_record import (
    MAX_DATASET,
    MAX_SOURCE,
    MAX_TYPE,
    preview_event,
    record_event,
)
from prodinf.kinds.event_record import _checked as checked_event
from prodinf.kinds.subscriptions import load_subscriptions
from prodinf.portal.access import acting_user, auth_on
from prodinf.portal.api.jobs import bool_arg, error, int_arg, job_url, json_object
from prodinf.portal.api.openapi import TRIMMED, arg, array, nullable, obj, page_args, page_of, text
from prodinf.portal.current import runtime
from prodinf.redact import redact
from prodinf.status import JobStatus
from prodinf.store import JobStore
from prodinf.store.children import ChildJob, children_of
from prodinf.store.events import get_event, list_events

ns = Namespace("events", description="What happens to a dataset, and the processes it starts")
subscriptions_ns = Namespace("subscriptions", description="Which processes an event starts")

submission = ns.schema_model(
    "Event",
    obj(
        {
            "type": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_TYPE,
                "pattern": TRIMMED,
                "description": "The event type (new_assembly); no spaces around it",
            },
            "dataset": nullable(text(MAX_DATASET, min_length=1, description="The database")),
            "payload": {
                "type": "object",
                "description": "A JSON object the subscriptions' templates read",
            },
            "source": nullable(
                text(MAX_SOURCE, description="Who or what reports it (default: the user)")
            ),
            "idempotency_key": nullable(
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_KEY_LENGTH,
                    "pattern": TRIMMED,
                    "description": "Recording the same key again returns the first event",
                }
            ),
        },
        ["type"],
        closed=True,
    ),
)
EVENT = obj(
    {
        "id": nullable({"type": "string", "description": "null for a dry run"}),
        "type": {"type": "string"},
        "dataset": nullable({"type": "string"}),
        "attributes": nullable(
            {"type": "object", "description": "What the naming rules read in the dataset"}
        ),
        "payload": {"type": "object"},
        "source": nullable({"type": "string"}),
        "idempotency_key": nullable({"type": "string"}),
        "created_at": {"type": "string", "format": "date-time"},
        "status": nullable({"type": "string", "description": "Its job's status"}),
        "url": {"type": "string"},
        "job": nullable({"type": "string", "description": "Its job in the API"}),
        "processes": array({"type": "object"}, description="What it starts"),
        "dry_run": {"type": "boolean"},
    },
    ["id", "type", "dataset", "payload"],
)
event_model = ns.schema_model("EventDocument", EVENT)
event_page = ns.schema_model(
    "EventPage",
    page_of(EVENT),
)
subscription_list = subscriptions_ns.schema_model(
    "SubscriptionList",
    obj(
        {
            "source": {"type": "string", "description": "The subscriptions file"},
            "items": array({"type": "object"}),
        },
        ["source", "items"],
    ),
)


def event_url(event_id: str) -> str:
    return url_for("api.events_event_item", event_id=event_id, _external=True)


def _shown(event: dict[str, Any]) -> dict[str, Any]:
    """An event as the API answers it: links added, credentials masked."""
    job = event.get("job_id")
    shown = redact(event)
    return {**shown, "url": event_url(event["id"]), "job": job_url(job) if job else None}


def event_processes(store: JobStore, event: dict[str, Any]) -> list[dict[str, Any]]:
    """Each process of ``event`` as its job was given it: subscription, kind, what it
    runs (``target``), after, the error if its params did not render, and the
    ``job_id`` and ``status`` of its newest run (``None`` until started: ``start_at``
    says when a coalescing window lets it); a process coalesced into another event's
    (``coalesced_into``) shows that event's run. What ``GET /api/v1/events/<id>`` and
    the event's page show."""
    if not event.get("job_id"):
        return []
    job = store.describe(event["job_id"])
    with store.transaction() as conn:
        children = children_of(conn, event["job_id"], "processes")
        followed = {
            proc["coalesced_into"]["job"]: children_of(
                conn, proc["coalesced_into"]["job"], "processes"
            )
            for proc in job["params"].get("processes", [])
            if proc.get("coalesced_into")
        }
    processes = []
    for proc in job["params"].get("processes", []):
        sub = proc["subscription"]
        child = _newest(children, sub)
        if child is None and proc.get("coalesced_into"):
            child = _newest(followed[proc["coalesced_into"]["job"]], sub)
        processes.append(
            {
                "subscription": sub,
                "kind": proc["kind"],
                "target": proc.get("target") or proc["kind"],
                "after": proc["after"],
                "error": proc["error"],
                "job_id": child.id if child else None,
                "status": child.status if child else None,
                **{k: proc[k] for k in ("queue", "start_at", "coalesced_into") if proc.get(k)},
            }
        )
    return processes


def _newest(children: dict[str, ChildJob], sub: str) -> ChildJob | None:
    """The newest run of subscription ``sub`` among a step's children (``sub``, then
    ``sub~2``, ... after retries)."""
    mine = []
    for name, child in children.items():
        base, _, number = name.partition("~")
        if base == sub:
            mine.append((int(number) if number.isdigit() else 1, child))
    return max(mine, key=lambda item: item[0])[1] if mine else None


@ns.route("")
class EventList(Resource):  # type: ignore[misc]
    @ns.doc(
        params={
            "type": arg("Only events of this type"),
            "dataset": arg("Only events about this dataset"),
            "status": arg("Only events whose job is in this status", enum=list(JobStatus)),
            **page_args("Events"),
        }
    )
    @ns.response(200, "A page of events, newest first", event_page)
    @ns.response(400, "Bad filter; `field` names it", error)
    @ns.response(503, "The store is unavailable", error)
    def get(self) -> dict[str, Any]:
        """Events, newest first, filtered by type, dataset and status, a page at a time."""
        status = request.args.get("status") or None
        if status is not None and status not in tuple(JobStatus):
            raise ValidationError(f"status must be one of {', '.join(JobStatus)}", field="status")
        limit = int_arg("limit", 50, 1, 500)
        offset = int_arg("offset", 0, 0, 10**9)
        items, total = list_events(
            runtime().store,
            type=request.args.get("type") or None,
            dataset=request.args.get("dataset") or None,
            status=status,
            limit=limit,
            offset=offset,
        )
        return {
            "items": [_shown(e) for e in items],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    @ns.expect(submission)
    @ns.doc(
        params={
            "dry_run": arg(
                "true: answer the processes it would start; store nothing (default false)",
                "boolean",
            )
        }
    )
    @ns.response(201, "Recorded, with the processes it starts", event_model)
    @ns.response(200, "An event with this idempotency key exists, or a dry run", event_model)
    @ns.response(400, "Invalid event; `field` names what is wrong", error)
    @ns.response(503, "Store or broker unavailable; nothing was recorded", error)
    def post(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Record an event; its job starts every process subscribed to it."""
        body = json_object()
        rt = runtime()
        who = acting_user()
        if who and auth_on():  # with users on: who sent it, always (a claim checked, ignored)
            if "source" in body:
                checked_event(rt.settings, body)
            body = {**body, "source": who}
        elif who and "source" not in body:
            body = {**body, "source": who}
        if bool_arg("dry_run"):
            event, matches = preview_event(rt.settings, rt.registry, body)
            processes = [m.model_dump() for m in matches]
            shown = redact({**event, "processes": processes})
            return {**shown, "id": None, "dry_run": True}, 200, {}
        event, created = record_event(rt.store, rt.registry, rt.settings, rt.publish, body)
        url = event_url(event["id"])
        return _shown(event), 201 if created else 200, {"Location": url}


@ns.route("/<string:event_id>")
class EventItem(Resource):  # type: ignore[misc]
    @ns.response(200, "The event and each process", event_model)
    @ns.response(404, "No such event", error)
    @ns.response(503, "The store is unavailable", error)
    def get(self, event_id: str) -> dict[str, Any]:
        """An event, and each process: its subscription, job and status."""
        store = runtime().store
        event = get_event(store, event_id)
        if event is None:
            raise NotFound(f"no event {event_id!r}", field="event_id")
        processes = []
        for proc in event_processes(store, event):
            job_id = proc.pop("job_id")
            processes.append({**proc, "job": job_url(job_id) if job_id else None})
        return {**_shown(event), "processes": processes}


@subscriptions_ns.route("")
class SubscriptionList(Resource):  # type: ignore[misc]
    @subscriptions_ns.response(200, "Every subscription", subscription_list)
    def get(self) -> dict[str, Any]:
        """The subscriptions this prodinf runs, as its file states them."""
        subs = load_subscriptions(runtime().settings.subscriptions)
        return {
            "source": subs.source,
            "items": [s.model_dump(mode="json") for s in subs.subscriptions],
        }
