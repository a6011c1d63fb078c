"""The portal: REST API (flask-restx) under ``/api/v1``, web pages, ``/health`` and
``/metrics``."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from flask_restx import apidoc
from flask_wtf.csrf import CSRFProtect

from prodinf.celery_app import create_celery
from prodinf.config import Settings, get_settings
from prodinf.exceptions import ProdinfError
from prodinf.portal import (
    access,
    auth_views,
    dashboard_views,
    dataset_views,
    errors,
    event_views,
    handover_views,
    hardening,
    metrics,
    views,
)
from prodinf.portal.api import build_api
from prodinf.portal.current import EXTENSION, runtime_of
from prodinf.runtime import Runtime

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> Flask:
    """Build the portal for ``settings`` (read from the environment when omitted)."""
    settings = settings or get_settings()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key.get_secret_value(),
        RESTX_ERROR_404_HELP=False,
        RESTX_MASK_SWAGGER=False,
        JSON_SORT_KEYS=False,
    )
    hardening.install(app, settings)  # first: hosts, body size and headers for everything
    app.extensions[EXTENSION] = runtime or Runtime(settings, create_celery(settings))

    blueprint, api = build_api()
    app.register_blueprint(blueprint)
    access.install(app)  # first: who may (a stranger's post goes to the login, not a 400)
    csrf = CSRFProtect(app)  # every form; the API takes tokens and JSON, not cookies
    csrf.exempt(blueprint)
    auth_views.limiter.init_app(app)
    app.register_blueprint(auth_views.blueprint)
    app.add_url_rule("/api/docs", "api_docs", lambda: apidoc.ui_for(api))
    app.register_blueprint(views.blueprint)
    app.register_blueprint(event_views.blueprint)
    app.register_blueprint(handover_views.blueprint)
    app.register_blueprint(dataset_views.blueprint)
    app.register_blueprint(dashboard_views.blueprint)
    app.add_url_rule("/metrics", "metrics", metrics.scrape)
    errors.register(app)

    @app.get("/health")
    def health() -> Any:
        rt = runtime_of(app)
        report: dict[str, str] = {}
        for name, check in (("store", rt.store.ping), ("broker", rt.check_broker)):
            try:
                check()
                report[name] = "ok"
            except ProdinfError as exc:
                report[name] = f"down: {exc.message}"
        code = 200 if all(value == "ok" for value in report.values()) else 503
        return jsonify(report), code

    return app
