"""The handover forms: hand one database over (a server's databases to choose from), and
many at once (a list or a pattern). Their routes are added to the handover pages'
blueprint (``handover_views.py``).

A server URI may hold a password. A page never shows it: the forms show the URI
masked and keep the full one in the session (the user's own signed cookie), and a
masked URI sent back is read as the full one kept for it. The form that lists a
server's databases posts, so a password typed into it never lands in a URL either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from prodinf.exceptions import Conflict, ProdinfError, TransientError, ValidationError
from prodinf.kinds.handover import Handovers
from prodinf.kinds.handover.checks import NOTIFY
from prodinf.kinds.handover.report import handover_status
from prodinf.kinds.handover.service import parse_server
from prodinf.portal.access import acting_user
from prodinf.portal.current import runtime
from prodinf.redact import redact_text

__all__ = ["add_routes", "service"]

#: The inputs of the handover form, as the errors it shows name them.
FIELDS = ("server_uri", "database", "contact", "comment", "notify")
#: The inputs of the bulk form.
BULK_FIELDS = ("server_uri", "databases", "pattern", "contact", "comment", "notify")
#: Where the session keeps the full server URIs the forms show masked.
_KEPT = "handover_servers"
#: How many such URIs it keeps (the newest).
_KEEP = 4


def add_routes(blueprint: Blueprint) -> None:
    """Put the forms on ``blueprint``."""
    blueprint.add_url_rule("/handovers/new", "new_handover", new_handover, methods=["GET", "POST"])
    blueprint.add_url_rule("/handovers/bulk", "bulk_form", bulk_form, methods=["GET", "POST"])


def service() -> Handovers:
    """The handover operations on this portal's runtime."""
    rt = runtime()
    return Handovers(rt.store, rt.registry, rt.settings, rt.publish)


def _user() -> str | None:
    return acting_user()


# -- server URIs, never shown with their password ----------------------------------------------


def shown_uri(value: str) -> str:
    """``value`` as a form shows it: masked, the full URI kept in the session."""
    masked = redact_text(value)
    if masked != value:
        kept = {k: v for k, v in (session.get(_KEPT) or {}).items() if k != masked}
        kept[masked] = value
        session[_KEPT] = dict(list(kept.items())[-_KEEP:])
    return masked


def typed_uri(value: str) -> str:
    """The server URI a form sent: a masked one it showed is the full one kept."""
    value = value.strip()
    if "***" not in value:
        return value
    kept = session.get(_KEPT) or {}
    full = kept.get(value) if isinstance(kept, dict) else None
    if not isinstance(full, str):
        raise ValidationError(
            "server_uri: its password is masked and this session no longer holds it: "
            "type the URI again with its password",
            field="server_uri",
        )
    return full


# -- one handover ------------------------------------------------------------------------------


def new_handover() -> ResponseReturnValue:
    """Step 1: a server URI (``?server_uri=`` or the form's List button) lists the
    server's databases; step 2: pick one, say who to tell and why, and hand it over."""
    if request.method == "GET":
        values = {"server_uri": request.args.get("server_uri", ""), "notify": NOTIFY[0]}
        return handover_form(values, listing=bool(values["server_uri"].strip()))
    values = {name: request.form.get(name, "") for name in FIELDS}
    if request.form.get("action") == "list":
        return handover_form(values, listing=True)
    try:
        server = typed_uri(values["server_uri"])
        if not server:
            raise ValidationError(
                "server_uri is required: the server to hand over from", field="server_uri"
            )
        database = values["database"].strip()
        if not database:
            raise ValidationError("choose the database to hand over", field="database")
        src = parse_server(server).with_database(database).secret()
        raw = {k: values[k] for k in ("contact", "comment", "notify")}
        made = service().submit({"src_uri": src, **raw}, submitted_by=_user())
    except (ValidationError, Conflict) as exc:
        field = "database" if exc.field == "src_uri" else exc.field
        token = exc.details.get("token") if isinstance(exc, Conflict) else None
        return handover_form(values, True, field, exc.message, exc.status_code, token)
    except TransientError as exc:  # nothing was submitted: say so, and keep what was typed
        return handover_form(values, True, None, exc.message, exc.status_code)
    flash(f"Handover of {made['database']} submitted.", "success")
    return redirect(url_for("handover_pages.handover", token=made["token"]), 303)


def handover_form(
    values: Mapping[str, str],
    listing: bool = False,
    field: str | None = None,
    message: str | None = None,
    code: int = 200,
    conflict: str | None = None,
) -> ResponseReturnValue:
    """The form with ``values`` typed so far, the server's databases when ``listing``,
    and an error to show next to ``field`` (a 409: the handover in the way)."""
    errors: dict[str, str] = {}
    if message is not None:
        errors[field if field in FIELDS else "form"] = redact_text(message)
    server: dict[str, Any] | None = None
    if listing and "server_uri" not in errors:
        try:
            server = service().databases(typed_uri(values.get("server_uri", "")))
            for db in server["databases"]:
                if db["handover"]:
                    db["handover"]["status"] = handover_status(db["handover"]["status"])
        except ProdinfError as exc:
            if not errors:
                code = exc.status_code
            errors.setdefault("server_uri", redact_text(exc.message))
    shown = {**values, "server_uri": shown_uri(values.get("server_uri", "").strip())}
    return render_template(
        "new_handover.html",
        values=shown,
        errors=errors,
        server=server,
        conflict=conflict,
        notify=NOTIFY,
    ), code


# -- many at once ------------------------------------------------------------------------------


def bulk_form() -> ResponseReturnValue:
    """Hand over many databases of one server: named one per line, or a pattern."""
    if request.method == "GET":
        values = {
            "server_uri": request.args.get("server_uri", ""),
            "pattern": request.args.get("pattern", ""),
            "notify": NOTIFY[0],
        }
        return bulk_handover_form(values)
    values = {name: request.form.get(name, "") for name in BULK_FIELDS}
    try:
        made = service().bulk(bulk_request(values), submitted_by=_user())
    except (ValidationError, Conflict) as exc:
        field = "server_uri" if exc.field == "src_uri" else exc.field
        return bulk_handover_form(values, field, exc.message, exc.status_code)
    except TransientError as exc:
        return bulk_handover_form(values, None, exc.message, exc.status_code)
    answers = made["answers"]
    refused = sum(1 for a in answers if a.get("error"))
    handed = len(answers) - refused
    said = f"{handed} handover{'s' if handed != 1 else ''} submitted"
    flash(
        f"{said}, {refused} refused." if refused else f"{said}.", "info" if refused else "success"
    )
    return redirect(url_for("handover_pages.bulk", bulk_id=made["id"]), 303)


def bulk_request(values: Mapping[str, str]) -> dict[str, Any]:
    """What ``POST /api/v1/handovers/bulk`` takes, from the bulk form: the names one per
    line (blank lines skipped), or the pattern; empty inputs left out."""
    raw: dict[str, Any] = {"server_uri": typed_uri(values["server_uri"])}
    names = [line.strip() for line in values["databases"].splitlines() if line.strip()]
    if names:
        raw["databases"] = names
    if pattern := values["pattern"].strip():
        raw["pattern"] = pattern
    for name in ("contact", "comment", "notify"):
        if values[name].strip():
            raw[name] = values[name]
    return raw


def bulk_handover_form(
    values: Mapping[str, str],
    field: str | None = None,
    message: str | None = None,
    code: int = 200,
) -> ResponseReturnValue:
    errors: dict[str, str] = {}
    if message is not None:
        errors[field if field in BULK_FIELDS else "form"] = redact_text(message)
    shown = {**values, "server_uri": shown_uri(values.get("server_uri", "").strip())}
    return render_template("bulk_handover.html", values=shown, errors=errors, notify=NOTIFY), code
