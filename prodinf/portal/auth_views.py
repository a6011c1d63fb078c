"""The login and logout pages (``PRODINF_AUTH=users``): a session per browser.

Login attempts are limited per address (Flask-Limiter: ``LOGIN_LIMIT``) and a failed
one is answered no sooner than ``FAILED_DELAY`` after it came, so guessing passwords
is slow; a wrong name and a wrong password get the same answer in the same time.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import login_user, logout_user

from prodinf.portal.access import _LoggedIn, auth_on, users

__all__ = ["LOGIN_LIMIT", "blueprint", "limiter"]

blueprint = Blueprint("auth", __name__)
#: Login attempts each address may make.
LOGIN_LIMIT = "5 per minute"
#: Seconds a failed login takes at least.
FAILED_DELAY = 1.0
limiter = Limiter(key_func=get_remote_address, storage_uri="memory://", default_limits=[])


def _next_page(raw: str | None) -> str:
    """Where to go after logging in: a path of this site only (never another host)."""
    if raw:
        parts = urlsplit(raw)
        if not parts.scheme and not parts.netloc and raw.startswith("/") and "\\" not in raw:
            return raw
    return url_for("web.jobs")


@blueprint.route("/login", methods=["GET", "POST"])
@limiter.limit(LOGIN_LIMIT, methods=["POST"])
def login() -> ResponseReturnValue:
    """Ask for a name and password; on success, go back to the page that asked."""
    target = _next_page(request.values.get("next"))
    if not auth_on():
        return redirect(target)
    if request.method == "GET":
        return render_template("login.html", next=target, name="", error=None)
    started = time.monotonic()
    name = request.form.get("name", "").strip()
    user = users().login(name, request.form.get("password", "")) if name else None
    if user is None:
        time.sleep(max(0.0, FAILED_DELAY - (time.monotonic() - started)))
        error = "That name and password do not match a user who may log in."
        return render_template("login.html", next=target, name=name, error=error), 401
    login_user(_LoggedIn(user))
    return redirect(target)


@blueprint.post("/logout")
def logout() -> ResponseReturnValue:
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))
