"""Who may do what: one table of every endpoint's need, checked before each request.

With ``PRODINF_AUTH=users`` the API takes ``Authorization: Bearer <token>`` and the
pages a login (a Flask-Login session); each user's role (``store.users.ROLES``)
decides what they may do. An endpoint missing from :data:`ACCESS` is refused to
everyone (a route added without saying who may use it fails closed, and its test
fails). With ``PRODINF_AUTH=none`` everyone may do everything (loopback only: the
CLI refuses to serve so elsewhere without ``--insecure``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Flask, g, request
from flask_login import LoginManager, UserMixin, current_user

from prodinf.exceptions import Forbidden, NotFound, Unauthorized
from prodinf.portal.current import runtime
from prodinf.redact import redact_text
from prodinf.store.users import User, Users, at_least

__all__ = [
    "ACCESS",
    "Need",
    "acting_user",
    "can",
    "install",
    "may_act_on",
    "shown",
    "users",
]

OPEN = "open"


@dataclass(frozen=True)
class Need:
    """What a request needs: a role (or ``open``); with ``owner``, the view argument
    naming the job (or handover token) whose submitter may act on it with the role,
    while anyone else needs ``operator``."""

    role: str
    owner: str | None = None


READ = Need("viewer")
SUBMIT = Need("submitter")
ADMIN = Need("admin")
PUBLIC = Need(OPEN)
#: ``/metrics``: a viewer's, or anyone's with ``PRODINF_METRICS_AUTH=open``.
SCRAPE = Need("viewer")


def _own(arg: str) -> Need:
    return Need("submitter", owner=arg)


#: endpoint -> need, or {method: need}. Every endpoint of the app is here.
ACCESS: dict[str, Need | dict[str, Need]] = {
    # open: liveness, the login, static files, the API's description
    "health": PUBLIC,
    "static": PUBLIC,
    "restx_doc.static": PUBLIC,
    "api_docs": PUBLIC,
    "api.specs": PUBLIC,
    "api.root": PUBLIC,
    "auth.login": PUBLIC,
    "auth.logout": PUBLIC,
    # a remote service's callback is signed (PRODINF_WEBHOOK_SECRET), not logged in
    "api.callbacks_callback": PUBLIC,
    # the API
    "api.jobs_job_list": {"GET": READ, "POST": SUBMIT},
    "api.jobs_job_item": READ,
    "api.jobs_job_logs": READ,
    "api.jobs_job_cancel": _own("job_id"),
    "api.jobs_job_retry": _own("job_id"),
    "api.kinds_kind_list": READ,
    "api.kinds_kind_item": READ,
    "api.notifications_notification_list": SUBMIT,
    "api.events_event_list": {"GET": READ, "POST": SUBMIT},
    "api.events_event_item": READ,
    "api.subscriptions_subscription_list": READ,
    "api.services_service_list": READ,
    "api.services_service_item": READ,
    "api.handovers_handover_list": {"GET": READ, "POST": SUBMIT},
    "api.handovers_handover_item": READ,
    "api.handovers_bulk_handover": SUBMIT,
    "api.handovers_bulk_item": READ,
    "api.handovers_handover_stop": _own("token"),
    "api.handovers_handover_restart": _own("token"),
    "api.databases_database_list": SUBMIT,  # it connects to the server named
    "api.datasets_dataset_list": READ,
    "api.datasets_dataset_item": READ,
    "api.users_user_list": ADMIN,
    "api.users_user_item": ADMIN,
    "api.users_token_list": ADMIN,
    "api.users_token_item": ADMIN,
    "api.users_me": READ,
    # the pages
    "web.jobs": READ,
    "web.job": READ,
    "web.new_job": SUBMIT,
    "web.submit_job": SUBMIT,
    "web.cancel": _own("job_id"),
    "web.retry": _own("job_id"),
    "web.new_notification": SUBMIT,
    "web.submit_notification_form": SUBMIT,
    "web.outbox": READ,
    "web.outbox_mail": READ,
    "events.events": READ,
    "events.event": READ,
    "events.new_event": SUBMIT,
    "events.submit_event": SUBMIT,
    "handover_pages.handovers": READ,
    "handover_pages.handover": READ,
    "handover_pages.bulk": READ,
    "handover_pages.new_handover": SUBMIT,
    "handover_pages.bulk_form": SUBMIT,
    "handover_pages.stop_handover": _own("token"),
    "handover_pages.restart_handover": _own("token"),
    "datasets.datasets": READ,
    "dashboard.dashboard": READ,
    "datasets.dataset": READ,
    # Prometheus: a token (any role), or open (PRODINF_METRICS_AUTH)
    "metrics": SCRAPE,
}


def need_of(endpoint: str | None, method: str) -> Need | None:
    """What ``method`` on ``endpoint`` needs; ``None``: not in the table (refused)."""
    found = ACCESS.get(endpoint or "")
    if isinstance(found, dict):
        return found.get("GET" if method == "HEAD" else method)
    return found


class _LoggedIn(UserMixin):  # type: ignore[misc]
    def __init__(self, user: User) -> None:
        self.user = user
        self.id = user.name


def users() -> Users:
    return Users(runtime().store)


def _from_token() -> tuple[User, bool] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        return None
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be: Bearer <token>")
    found = users().authenticate(token.strip())
    if found is None:
        raise Unauthorized("the token is not valid: unknown, expired or revoked")
    user, made = found
    return user, made.read_only


def identify() -> tuple[User | None, str | None]:
    """The user of this request and the role it acts with (a read-only token acts as a
    viewer); ``(None, None)`` when no one is identified."""
    if "prodinf_user" in g:
        return g.prodinf_user  # type: ignore[no-any-return]
    found: tuple[User | None, str | None] = (None, None)
    if _takes_tokens():
        token = _from_token()
        if token is not None:
            user, read_only = token
            found = (user, "viewer" if read_only and at_least(user.role, "viewer") else user.role)
    if found[0] is None and not request.path.startswith("/api/") and current_user.is_authenticated:
        user = current_user.user
        found = (user, user.role)
    g.prodinf_user = found
    return found


def _takes_tokens() -> bool:
    """Whether this request may carry a token: the API's, and a scrape's."""
    return request.path.startswith("/api/") or request.path == "/metrics"


def auth_on() -> bool:
    return runtime().settings.auth == "users"


def acting_user(claimed: str | None = None) -> str | None:
    """Who does what this request does: the authenticated user's name; with
    authentication off, the name the caller claims (``X-Prodinf-User``, a body field)."""
    if not auth_on():
        return claimed or request.headers.get("X-Prodinf-User") or None
    user, _ = identify()
    return user.name if user is not None else None


def _owner(need: Need) -> str | None:
    value = (request.view_args or {}).get(need.owner or "")
    if not isinstance(value, str):
        return None
    try:
        found = runtime().store.describe(value)
    except NotFound:
        return None
    owner = found.get("submitted_by")
    return owner if isinstance(owner, str) else None


def may_act_on(need: Need, role: str | None, name: str | None, owner: str | None) -> bool:
    """Whether ``role`` (as user ``name``) may do what ``need`` asks to work of ``owner``."""
    if need.role == OPEN:
        return True
    if role is None:
        return False
    if need.owner is not None:
        if at_least(role, "operator"):
            return True
        return at_least(role, need.role) and name is not None and owner == name
    return at_least(role, need.role)


def can(action: str, owner: str | None = None) -> bool:
    """For the templates: whether this request's user may ``action`` (``submit``,
    ``act`` on work of ``owner``, ``admin``, ``traceback``)."""
    if not auth_on():
        return True
    try:
        user, role = identify()
    except Unauthorized:
        user, role = None, None
    name = user.name if user is not None else None
    needs = {
        "submit": SUBMIT,
        "act": Need("submitter", owner="-"),
        "admin": ADMIN,
        "traceback": ADMIN,
    }[action]
    return may_act_on(needs, role, name, owner)


def shown(detail: dict[str, Any]) -> dict[str, Any]:
    """A job's detail as this request's user may see it: the tracebacks its history
    keeps are for admins (operators of prodinf); everyone else sees the messages."""
    if can("traceback"):
        return detail
    history = []
    for entry in detail.get("history", []):
        data = entry.get("data")
        if isinstance(data, dict) and "traceback" in data:
            data = {k: v for k, v in data.items() if k != "traceback"} or None
            entry = {**entry, "data": data}
        history.append(entry)
    return {**detail, "history": history}


def _asked_for() -> str:
    """The page asked for, to come back to after logging in; a credential in its query
    (``/handovers/new?server_uri=mysql://u:pw@host``) masked, so it is not carried into
    the login's address, its page, the browser's history or the request log."""
    args = [(name, redact_text(value)) for name, value in request.args.items(multi=True)]
    return request.path + (f"?{urlencode(args)}" if args else "")


def _enforce() -> Any:
    need = need_of(request.endpoint, request.method)
    if need is None:
        if request.endpoint is None:
            return None  # no such route: the 404 (or 405) answers
        raise Forbidden(f"{request.method} {request.path} is open to no one", field=None)
    if need.role == OPEN or not auth_on():
        return None
    if need is SCRAPE and runtime().settings.metrics_auth == OPEN:
        return None
    user, role = identify()
    if user is None:
        if _takes_tokens():
            raise Unauthorized("this needs a token: Authorization: Bearer <token>")
        from flask import redirect, url_for

        return redirect(url_for("auth.login", next=_asked_for()))
    owner = _owner(need) if need.owner is not None else None
    if not may_act_on(need, role, user.name, owner):
        if need.owner is not None and at_least(role or "", need.role):
            raise Forbidden(
                f"{user.name} may only do this to their own work; this needs the operator role",
                field=None,
            )
        raise Forbidden(f"this needs the {need.role} role; {user.name} is a {role}", field=None)
    return None


def install(app: Flask) -> None:
    """Check every request against :data:`ACCESS`; sessions for the pages' logins."""
    manager = LoginManager(app)
    manager.login_view = "auth.login"

    @manager.user_loader  # type: ignore[untyped-decorator]
    def load(name: str) -> _LoggedIn | None:
        try:
            user = users().get(name)
        except NotFound:
            return None
        return None if user.disabled else _LoggedIn(user)

    app.before_request(_enforce)

    @app.context_processor
    def helpers() -> dict[str, Any]:
        try:
            user, role = identify() if auth_on() else (None, None)
        except Unauthorized:  # an open page asked with a bad token: shown as to anyone
            user, role = None, None
        return {"can": can, "auth_on": auth_on(), "who": user, "who_role": role}
