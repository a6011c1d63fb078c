"""Web pages: the jobs list, one job with its steps and history, the form that submits one,
and the mail outbox.

Server-rendered Jinja2, no JavaScript. Everything a job holds is text to the
templates (autoescaped); JSON is pretty-printed here and escaped there. Forms
that change state carry a per-session token, so another site cannot post them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MultiDict

from prodinf.engine.registry import Kind
from prodinf.exceptions import BrokerUnavailable, Conflict, TransientError, ValidationError
from prodinf.mail import outbox_dir, outbox_message, outbox_messages
from prodinf.portal.access import acting_user, shown
from prodinf.portal.current import runtime
from prodinf.portal.job_list import jobs_page
from prodinf.portal.notify_form import notify_fields, notify_from
from prodinf.portal.params_form import fields_for, nearest, params_from, problems, values_of
from prodinf.portal.step_logs import step_logs
from prodinf.status import RETRYABLE, TERMINAL, JobStatus

__all__ = ["blueprint"]

blueprint = Blueprint("web", __name__)

#: Seconds between reloads of a page that shows a job still in progress.
REFRESH_SECONDS = 5
#: Jobs per page of the list unless ``?limit=`` says otherwise.
PAGE_SIZE = 50
#: Messages the outbox page lists, newest first.
OUTBOX_SIZE = 200


# -- the jobs list -------------------------------------------------------------------------


@blueprint.get("/jobs")
@blueprint.get("/")  # the first rule: links to the list are "/"
def jobs() -> ResponseReturnValue:
    """Jobs newest first, searched, sorted and paged (``job_list.py``)."""
    return jobs_page(PAGE_SIZE, REFRESH_SECONDS)


# -- one job -------------------------------------------------------------------------------


def checks_report(detail: dict[str, Any]) -> dict[str, Any] | None:
    """A healthcheck's report in a job's result or error details: its verdict, its checks
    (failed first) and those skipped; None for a job that carries none."""
    for holder in (detail.get("result"), (detail.get("error") or {}).get("details")):
        checks = holder.get("checks") if isinstance(holder, dict) else None
        if isinstance(holder, dict) and isinstance(checks, list):
            found = holder.get("report")
            report: dict[str, Any] = found if isinstance(found, dict) else {}
            ordered = sorted(
                (c for c in checks if isinstance(c, dict)), key=lambda c: bool(c.get("passed"))
            )
            return {
                "verdict": report.get("subject"),
                "summary": holder.get("summary") or {},
                "checks": ordered,
                "skipped": holder.get("skipped") or [],
            }
    return None


@blueprint.get("/jobs/<job_id>")
def job(job_id: str) -> ResponseReturnValue:
    """A job: status, params, result or error, the step timeline and the full history.
    A unique start of its id (at least 6 characters) redirects to it."""
    store = runtime().store
    full = store.resolve_id(job_id)
    if full != job_id:
        return redirect(url_for("web.job", job_id=full), 302)
    detail = shown(store.describe(job_id))
    active = detail["status"] not in TERMINAL
    return render_template(
        "job.html",
        job=detail,
        report=checks_report(detail),
        can_cancel=active,
        can_retry=detail["status"] in RETRYABLE,
        can_run_again=any(k.name == detail["kind"] for k in offered(runtime().registry)),
        logs=step_logs(store, detail),
        refresh=REFRESH_SECONDS if active else None,
    )


@blueprint.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> ResponseReturnValue:
    try:
        summary = runtime().jobs.cancel(job_id, acting_user())
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        if summary["status"] == JobStatus.CANCELLED:
            flash("Job cancelled.", "success")
        else:
            flash("Cancel requested: the job stops after its current step.", "info")
    return redirect(url_for("web.job", job_id=job_id), 303)


@blueprint.post("/jobs/<job_id>/retry")
def retry(job_id: str) -> ResponseReturnValue:
    try:
        runtime().jobs.retry(job_id, acting_user())
    except Conflict as exc:
        flash(exc.message, "error")
    except BrokerUnavailable as exc:
        # The retry is committed; only its message is missing, and the reconciler sends it.
        flash(f"Retry recorded, but not sent yet ({exc.message}); it will be re-sent.", "error")
    else:
        flash("Job queued for retry.", "success")
    return redirect(url_for("web.job", job_id=job_id), 303)


# -- the new-job form ------------------------------------------------------------------------


def offered(registry: Any) -> list[Kind[Any]]:
    """The kinds the form offers: not those prodinf makes itself, nor those submitted
    through a form of their own (a handover: /handovers/new)."""
    return [k for k in registry.all() if not k.internal and k.submitted_at is None]


@blueprint.get("/jobs/new")
def new_job() -> ResponseReturnValue:
    """The form; ``?again=<job>`` fills it with that job's kind and params (run again)."""
    rt = runtime()
    kinds = offered(rt.registry)
    again = request.args.get("again")
    if again:
        earlier = rt.store.describe(rt.store.resolve_id(again))
        kind = rt.registry.get(earlier["kind"])
        values = values_of(earlier["params"], fields_for(kind.schema()))
        values.update(values_of(earlier.get("notify") or {}, notify_fields(rt.registry)))
        flash(
            f"The params of job {earlier['id'][:8]}; passwords are masked (***): type them "
            "again before submitting.",
            "info",
        )
        return job_form(earlier["kind"], values)
    name = request.args.get("kind") or (kinds[0].name if kinds else "")
    return job_form(name, values=None)


@blueprint.post("/jobs/new")
def submit_job() -> ResponseReturnValue:
    rt = runtime()
    name = request.form.get("kind", "")
    key = request.form.get("idempotency_key", "").strip() or None
    try:
        kind = rt.jobs.submittable(name)  # not one prodinf makes itself
        fields = fields_for(kind.schema())
        params, errors = params_from(request.form, fields)
        notify, notify_errors = notify_from(request.form, notify_fields(rt.registry))
        # Every bad input at once: the whole params model, the notify inputs, then parsing.
        keys = [f.key for f in fields]
        errors = {**problems(kind.params, params, "params", keys), **notify_errors, **errors}
        if errors:
            return job_form(name, request.form, errors=errors, code=400)
        summary, created = rt.jobs.submit(
            name,
            params,
            idempotency_key=key,
            submitted_by=acting_user(),
            notify=notify,
        )
    except (ValidationError, Conflict) as exc:
        return job_form(name, request.form, exc.field, exc.message, exc.status_code)
    except TransientError as exc:  # nothing was stored: say so, and keep what was typed
        return job_form(name, request.form, None, exc.message, exc.status_code)
    if created:
        flash("Job submitted.", "success")
    else:
        flash("A job with this idempotency key exists already; this is it.", "info")
    return redirect(url_for("web.job", job_id=summary["id"]), 303)


def job_form(
    name: str,
    values: MultiDict[str, str] | None,
    field: str | None = None,
    message: str | None = None,
    code: int = 200,
    errors: Mapping[str, str] | None = None,
) -> ResponseReturnValue:
    """The form for kind ``name``, with ``values`` typed so far and the errors to show
    (``errors`` by form key, or one ``message`` about ``field``)."""
    kinds = offered(runtime().registry)
    kind: Kind[Any] | None = next((k for k in kinds if k.name == name), None)
    fields = fields_for(kind.schema()) if kind is not None else []
    notify = notify_fields(runtime().registry) if kind is not None else []
    if kind is None and name:  # not offered: say why when the refusal did
        field, code = "kind", 400
        message = message if message is not None else f"unknown kind {name!r}"
    shown = dict(errors or {})
    if message is not None:
        keys = {"kind", "idempotency_key", *(f.key for f in [*fields, *notify])}
        where = nearest(field, keys)
        shown[where] = message.removeprefix(f"{field}: ") if where == field else message
    return render_template(
        "new_job.html",
        kinds=kinds,
        kind=kind,
        fields=fields,
        notify=notify,
        values=values,
        errors=shown,
    ), code


# -- "email me when this is done" -----------------------------------------------------------


@blueprint.get("/notifications/new")
def new_notification() -> ResponseReturnValue:
    return notification_form({"url": request.args.get("url", ""), "address": ""})


@blueprint.post("/notifications/new")
def submit_notification_form() -> ResponseReturnValue:
    from prodinf.portal.api.notifications import submit_notification

    values = {k: request.form.get(k, "").strip() for k in ("url", "address", "interval")}
    body: dict[str, Any] = {k: v for k, v in values.items() if v}
    try:
        if "interval" in body:
            try:
                body["interval"] = float(body["interval"])
            except ValueError:
                raise ValidationError("interval must be a number", field="interval") from None
        summary, _ = submit_notification(body, acting_user())
    except ValidationError as exc:
        return notification_form(values, exc.field, exc.message, exc.status_code)
    except TransientError as exc:
        return notification_form(values, None, exc.message, exc.status_code)
    flash(f"{values['address']} will be mailed when {values['url']} is done.", "success")
    return redirect(url_for("web.job", job_id=summary["id"]), 303)


def notification_form(
    values: Mapping[str, str],
    field: str | None = None,
    message: str | None = None,
    code: int = 200,
) -> ResponseReturnValue:
    errors: dict[str, str] = {}
    if message is not None:
        errors[field if field in ("url", "address", "interval") else "form"] = message
    return render_template("new_notification.html", values=values, errors=errors), code


# -- the outbox ----------------------------------------------------------------------------------


@blueprint.get("/outbox")
def outbox() -> ResponseReturnValue:
    """The mail written to the outbox folder, newest first; or which server mail goes to."""
    settings = runtime().settings
    if settings.smtp_host is not None:
        server = f"{settings.smtp_host}:{settings.smtp_port}"
        return render_template("outbox.html", server=server)
    return render_template(
        "outbox.html",
        server=None,
        folder=outbox_dir(settings),
        messages=outbox_messages(settings, limit=OUTBOX_SIZE),
        limit=OUTBOX_SIZE,
    )


@blueprint.get("/outbox/<name>")
def outbox_mail(name: str) -> ResponseReturnValue:
    """One outbox message: its headers and its text (404 for a name that is not a file in it)."""
    message = outbox_message(runtime().settings, name)
    subject = next((value for key, value in message.headers if key.lower() == "subject"), "")
    return render_template("outbox_message.html", message=message, subject=subject)


# -- shared by the templates ------------------------------------------------------------------


@blueprint.app_context_processor
def template_helpers() -> dict[str, Any]:
    return {"terminal": TERMINAL}


@blueprint.app_template_filter("when")
def when(value: str | None) -> str:
    """An ISO timestamp as ``2024-05-01 12:03:04`` (UTC, to the second)."""
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


@blueprint.app_template_filter("took")
def took(started: str | None, finished: str | None) -> str:
    """How long from ``started`` to ``finished``, e.g. ``0.42 s`` or ``3 min 5 s``."""
    if not started or not finished:
        return ""
    seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {rest} s"


@blueprint.app_template_filter("pretty")
def pretty(value: Any) -> str:
    """JSON, indented, as plain text (the template escapes it)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
