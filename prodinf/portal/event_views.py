"""Web pages for events: the events list, one event with its processes, and the form that
previews or records one.

Built like the job pages (``views.py``): server-rendered, no JavaScript, the same
filters and paging, the same form token, errors next to the field they name. What an
event holds is shown with credentials masked, as a job's params are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from prodinf.exceptions import Conflict, NotFound, TransientError, ValidationError
from prodinf.kinds.event_record import preview_event, record_event
from prodinf.kinds.subscriptions import load_subscriptions
from prodinf.portal.access import acting_user
from prodinf.portal.api.events import event_processes
from prodinf.portal.api.jobs import STATUSES, int_arg
from prodinf.portal.current import runtime
from prodinf.portal.views import PAGE_SIZE, REFRESH_SECONDS
from prodinf.redact import redact
from prodinf.status import TERMINAL
from prodinf.store.events import get_event, list_events

__all__ = ["blueprint"]

blueprint = Blueprint("events", __name__)

#: The inputs of the event form, as ``ValidationError.field`` names them.
FIELDS = ("type", "dataset", "payload", "idempotency_key")


# -- the events list -----------------------------------------------------------------------


@blueprint.get("/events")
def events() -> ResponseReturnValue:
    """Events newest first, filtered by type, dataset and their job's status, a page at a
    time (the filters of ``GET /api/v1/events``)."""
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}", field="status")
    kind = request.args.get("type") or None
    dataset = request.args.get("dataset") or None
    limit = int_arg("limit", PAGE_SIZE, 1, 500)
    offset = int_arg("offset", 0, 0, 10**9)
    items, total = list_events(
        runtime().store, type=kind, dataset=dataset, status=status, limit=limit, offset=offset
    )

    def page(**changes: Any) -> str:
        args: dict[str, Any] = {
            "type": kind,
            "dataset": dataset,
            "status": status,
            "limit": limit if limit != PAGE_SIZE else None,
            **changes,
        }
        return url_for("events.events", **{k: v for k, v in args.items() if v is not None})

    return render_template(
        "events.html",
        events=items,
        total=total,
        statuses=STATUSES,
        type=kind,
        dataset=dataset,
        status=status,
        first=offset + 1 if items else 0,
        last=offset + len(items),
        previous=page(offset=max(0, offset - limit) or None) if offset > 0 else None,
        following=page(offset=offset + limit) if offset + limit < total else None,
        refresh=REFRESH_SECONDS
        if any(e["status"] and e["status"] not in TERMINAL for e in items)
        else None,
    )


# -- one event -----------------------------------------------------------------------------


@blueprint.get("/events/<event_id>")
def event(event_id: str) -> ResponseReturnValue:
    """An event: what happened to which dataset, its job, and each process it started."""
    store = runtime().store
    found = get_event(store, event_id)
    if found is None:
        raise NotFound(f"no event {event_id!r}", field="event_id")
    return render_template(
        "event.html",
        event={**found, "payload": redact(found["payload"])},
        processes=event_processes(store, found),
        refresh=REFRESH_SECONDS if found["status"] and found["status"] not in TERMINAL else None,
    )


# -- the new-event form ----------------------------------------------------------------------


@blueprint.get("/events/new")
def new_event() -> ResponseReturnValue:
    values = {name: request.args.get(name, "") for name in ("type", "dataset")}
    return event_form(values)


@blueprint.post("/events/new")
def submit_event() -> ResponseReturnValue:
    """Preview (a dry run: the processes it would start, nothing stored) or record."""
    rt = runtime()
    values = {name: request.form.get(name, "") for name in FIELDS}
    try:
        document = document_from(values, acting_user())
        if request.form.get("action") == "preview":
            found, matches = preview_event(rt.settings, rt.registry, document)
            preview = {
                "event": found,
                "processes": [redact(m.model_dump()) for m in matches],
            }
            return event_form(values, preview=preview)
        recorded, created = record_event(rt.store, rt.registry, rt.settings, rt.publish, document)
    except (ValidationError, Conflict) as exc:
        return event_form(values, exc.field, exc.message, exc.status_code)
    except TransientError as exc:  # nothing was recorded: say so, and keep what was typed
        return event_form(values, None, exc.message, exc.status_code)
    if created:
        flash("Event recorded.", "success")
    else:
        flash("An event with this idempotency key exists already; this is it.", "info")
    return redirect(url_for("events.event", event_id=recorded["id"]), 303)


def document_from(values: Mapping[str, str], user: str | None) -> dict[str, Any]:
    """The event a submitted form describes, as ``POST /api/v1/events`` takes it: empty
    optional inputs left out, the payload parsed (a JSON object, empty meaning ``{}``)."""
    document: dict[str, Any] = {"type": values["type"].strip()}
    if dataset := values["dataset"].strip():
        document["dataset"] = dataset
    if (raw := values["payload"]).strip():
        try:
            document["payload"] = json.loads(raw)
        except ValueError as exc:
            message = f"payload is not valid JSON: {exc}"
            raise ValidationError(message, field="payload") from None
        except RecursionError:
            raise ValidationError("payload is nested too deeply", field="payload") from None
    if key := values["idempotency_key"].strip():
        document["idempotency_key"] = key
    if user:
        document["source"] = user
    return document


def event_form(
    values: Mapping[str, str],
    field: str | None = None,
    message: str | None = None,
    code: int = 200,
    preview: dict[str, Any] | None = None,
) -> ResponseReturnValue:
    """The form with ``values`` typed so far, an error to show, or a preview's matches."""
    errors: dict[str, str] = {}
    if message is not None:
        errors[field if field in FIELDS else "form"] = message
    subscribed = sorted(
        {
            t
            for s in load_subscriptions(runtime().settings.subscriptions).subscriptions
            for t in s.on
        }
    )
    return render_template(
        "new_event.html",
        values=values,
        errors=errors,
        preview=preview,
        subscribed=subscribed,
    ), code
