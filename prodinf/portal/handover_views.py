"""Web pages for handovers: the list, one handover's stage timeline (with Stop and
Restart), and a bulk handover's answers; the forms that submit them are in
``handover_forms.py``, on this blueprint.

Built like the event pages (``event_views.py``): server-rendered, no JavaScript, the
same filters and paging, the same form token. What a handover holds is shown as
``handover_detail`` gives it, credentials masked; its raw params never are.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from prodinf.exceptions import BrokerUnavailable, Conflict, NotFound, ValidationError
from prodinf.kinds.handover.report import handover_detail, handover_status
from prodinf.portal import handover_forms
from prodinf.portal.access import acting_user
from prodinf.portal.api.handovers import STATUS_FILTER
from prodinf.portal.api.jobs import int_arg
from prodinf.portal.current import runtime
from prodinf.portal.views import PAGE_SIZE, REFRESH_SECONDS
from prodinf.status import TERMINAL, JobStatus, StepStatus
from prodinf.store.handovers import get_bulk, list_handovers

__all__ = ["blueprint"]

blueprint = Blueprint("handover_pages", __name__)
handover_forms.add_routes(blueprint)

#: The filters of the list, as ``GET /api/v1/handovers`` takes them.
FILTERS = ("database", "type", "release", "status", "contact", "bulk")
#: Most handovers a bulk's page shows.
BULK_SHOWN = 1000


# -- the handovers list ----------------------------------------------------------------------


@blueprint.get("/handovers")
def handovers() -> ResponseReturnValue:
    """Handovers newest first, filtered by database, type, release, status, contact and
    bulk, a page at a time."""
    chosen = {name: request.args.get(name, "").strip() or None for name in FILTERS}
    status, release = chosen["status"], chosen["release"]
    if status is not None and status not in STATUS_FILTER:
        raise ValidationError(f"status must be one of {', '.join(STATUS_FILTER)}", field="status")
    if release is not None and not release.isdigit():
        raise ValidationError("release must be a number", field="release")
    limit = int_arg("limit", PAGE_SIZE, 1, 500)
    offset = int_arg("offset", 0, 0, 10**9)
    items, total = list_handovers(
        runtime().store,
        database=chosen["database"],
        type=chosen["type"],
        release=int(release) if release else None,
        statuses=[str(s) for s in STATUS_FILTER[status]] if status else None,
        contact=chosen["contact"],
        bulk_id=chosen["bulk"],
        limit=limit,
        offset=offset,
    )
    for item in items:
        item["handover_status"] = handover_status(item["status"])

    def page(**changes: Any) -> str:
        args: dict[str, Any] = {
            **chosen,
            "limit": limit if limit != PAGE_SIZE else None,
            **changes,
        }
        return url_for("handover_pages.handovers", **{k: v for k, v in args.items() if v})

    return render_template(
        "handovers.html",
        handovers=items,
        total=total,
        statuses=list(STATUS_FILTER),
        chosen=chosen,
        filtered=any(chosen.values()),
        first=offset + 1 if items else 0,
        last=offset + len(items),
        previous=page(offset=max(0, offset - limit) or None) if offset > 0 else None,
        following=page(offset=offset + limit) if offset + limit < total else None,
        refresh=REFRESH_SECONDS if any(h["status"] not in TERMINAL for h in items) else None,
    )


# -- one handover ----------------------------------------------------------------------------


@blueprint.get("/handovers/<token>")
def handover(token: str) -> ResponseReturnValue:
    """A handover: its database, status, each stage on a timeline (status, times, job,
    service, error), the failed stage's error, its events; Stop while it runs,
    Restart from a stage once it has ended."""
    found = handover_detail(runtime().store, token)
    running = found["job_status"] not in TERMINAL
    failed = found["error"]["stage"] if found["error"] else None
    return render_template(
        "handover.html",
        token=token,  # not found["token"]: masking takes any key named *token for a secret
        handover=found,
        failed_stage=failed,
        failed_checks=failed_checks(found),
        restart_from=_restart_from(found),
        running=running,
        refresh=REFRESH_SECONDS if running else None,
    )


def failed_checks(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The checks a failed healthcheck stage found problems with: each one's name,
    group, count, examples and message (from the stage job's error details)."""
    error = found.get("error") or {}
    details = error.get("details")
    if not isinstance(details, dict):
        return []
    inner = details.get("error")
    checks = (inner.get("details") or {}).get("checks") if isinstance(inner, dict) else None
    if not isinstance(checks, list):
        return []
    return [c for c in checks if isinstance(c, dict) and not c.get("passed", True)]


def _restart_from(found: dict[str, Any]) -> str | None:
    """The stage a restart starts from unless the user picks another: the failed one,
    else the first that did not succeed (a restart redoes the reverted ones before it)."""
    stages = found["stages"]
    failed = next((s["name"] for s in stages if s["status"] == StepStatus.FAILED), None)
    return failed or next((s["name"] for s in stages if s["status"] != StepStatus.SUCCEEDED), None)


@blueprint.post("/handovers/<token>/stop")
def stop_handover(token: str) -> ResponseReturnValue:
    try:
        stopped = handover_forms.service().stop(token, acting_user())
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        if stopped["status"] == JobStatus.CANCELLED:
            flash("Handover stopped.", "success")
        else:
            flash("Stop requested: the handover stops after its current stage's step.", "info")
    return redirect(url_for("handover_pages.handover", token=token), 303)


@blueprint.post("/handovers/<token>/restart")
def restart_handover(token: str) -> ResponseReturnValue:
    since = request.form.get("from", "")
    try:
        handover_forms.service().restart(token, since, acting_user())
    except (ValidationError, Conflict) as exc:
        flash(exc.message, "error")
    except BrokerUnavailable as exc:
        # The restart is committed; only its message is missing, and the reconciler sends it.
        flash(f"Restart recorded, but not sent yet ({exc.message}); it will be re-sent.", "error")
    else:
        flash(f"Handover restarted from {since}.", "success")
    return redirect(url_for("handover_pages.handover", token=token), 303)


# -- a bulk handover -------------------------------------------------------------------------


@blueprint.get("/handovers/bulks/<bulk_id>")
def bulk(bulk_id: str) -> ResponseReturnValue:
    """A bulk handover: what each database was answered (its handover, or why it was
    refused), and each handover's stages at a glance."""
    store = runtime().store
    found = get_bulk(store, bulk_id)
    if found is None:
        raise NotFound(f"no bulk handover {bulk_id!r}", field="bulk_id")
    items, _ = list_handovers(store, bulk_id=bulk_id, limit=BULK_SHOWN)
    details = {h["token"]: handover_detail(store, h["token"]) for h in items}
    answers = found["answers"] if isinstance(found["answers"], list) else []
    refused = [a for a in answers if a.get("error")]
    running = any(h["status"] not in TERMINAL for h in items)
    return render_template(
        "handover_bulk.html",
        bulk=found,
        answers=answers,
        details=details,
        handed=len(answers) - len(refused),
        refused=len(refused),
        refresh=REFRESH_SECONDS if running else None,
    )
