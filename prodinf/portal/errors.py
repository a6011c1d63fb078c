"""Where errors become HTTP: the error tree maps to a status and a ``{"message", "field"}`` body.

API routes answer JSON; web pages render an error page. Nothing answers a
traceback: unexpected errors are logged and answered with a plain 500.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, render_template, request
from flask_restx import Api
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from prodinf.exceptions import ProdinfError, TransientError, Unauthorized, ValidationError

__all__ = ["body_for", "register", "register_api"]

log = logging.getLogger(__name__)


def body_for(exc: BaseException) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The JSON body, status and headers answering ``exc``."""
    headers: dict[str, str] = {}
    if isinstance(exc, ProdinfError):
        if isinstance(exc, TransientError):
            headers["Retry-After"] = str(int(exc.retry_after or 5))
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="prodinf"'
        return exc.to_dict(), exc.status_code, headers
    if isinstance(exc, HTTPException):
        # What the exception says of itself (a 405's Allow), but not its HTML's type.
        headers.update((k, v) for k, v in exc.get_headers() if k.lower() != "content-type")
        field = "body" if isinstance(exc, RequestEntityTooLarge) else None
        return {"message": exc.description, "field": field}, exc.code or 500, headers
    log.error("unexpected error answering %s %s", request.method, request.path, exc_info=exc)
    return {"message": "internal error; see the portal's log", "field": None}, 500, headers


def register_api(api: Api) -> None:
    """Route every error raised under the API through ``body_for``."""

    # flask-restx documents each error handler as a response in swagger.json, with
    # the handler's docstring as its description (which OpenAPI 2 requires).
    @api.errorhandler(Exception)  # type: ignore[untyped-decorator]
    def handle(exc: Exception) -> tuple[dict[str, Any], int, dict[str, str]]:
        """An error: a JSON body with ``message`` and the ``field`` at fault."""
        return body_for(exc)


class _OutageInOneLine(logging.Filter):
    """An outage answered 503 (a ``TransientError``: the store or broker down) is logged
    as one warning line, not an error with a traceback per request (flask-restx logs
    every answer of 500 or more with its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, TransientError):
            record.msg = f"{record.getMessage()}: answered 503: {exc.message}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def register(app: Flask) -> None:
    """Errors outside the API: JSON for ``/api``, ``/health`` and ``/metrics``, an HTML
    page elsewhere."""
    app.logger.addFilter(_OutageInOneLine())

    @app.errorhandler(CSRFError)
    def stale_form(exc: CSRFError) -> Any:
        # Flask-WTF's reason ("The CSRF token is missing.") says nothing to do
        refused = ValidationError(
            f"this form is out of date or came from another site ({exc.description.lower()}"
            "): reload the page and send it again",
            field="csrf_token",
        )
        return handle(refused)

    @app.errorhandler(Exception)
    def handle(exc: Exception) -> Any:
        body, code, headers = body_for(exc)
        if request.path.startswith(("/api", "/health", "/metrics")):
            return body, code, headers
        return render_template("error.html", code=code, error=body), code, headers
