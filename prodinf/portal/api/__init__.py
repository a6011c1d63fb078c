"""The REST API, ``/api/v1``: one namespace per resource; OpenAPI at ``/api/v1/swagger.json``."""

from __future__ import annotations

from flask import Blueprint

from prodinf.portal.api import logs  # noqa: F401 (adds /jobs/<id>/logs to the jobs namespace)
from prodinf.portal.api.callbacks import ns as callbacks_ns
from prodinf.portal.api.datasets import ns as datasets_ns
from prodinf.portal.api.events import ns as events_ns
from prodinf.portal.api.events import subscriptions_ns
from prodinf.portal.api.handovers import databases_ns
from prodinf.portal.api.handovers import ns as handovers_ns
from prodinf.portal.api.jobs import ns as jobs_ns
from prodinf.portal.api.kinds import ns as kinds_ns
from prodinf.portal.api.notifications import ns as notifications_ns
from prodinf.portal.api.openapi import PortalApi
from prodinf.portal.api.services import ns as services_ns
from prodinf.portal.api.users import ns as users_ns
from prodinf.portal.errors import register_api

__all__ = ["build_api"]


def build_api() -> tuple[Blueprint, PortalApi]:
    """A fresh blueprint and Api for one app (tests build many apps)."""
    blueprint = Blueprint("api", __name__, url_prefix="/api/v1")
    api = PortalApi(
        blueprint,
        version="1",
        title="prodinf",
        description="Submit jobs of any registered kind and follow them to the end.",
        doc=False,
        # PRODINF_AUTH=users: every operation but the open ones (security.rst) takes a
        # token; OpenAPI 2 has no bearer scheme, so it is an API key in the header.
        authorizations={
            "bearer": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "Bearer <token> (prodinf token create --user NAME)",
            }
        },
        security="bearer",
    )
    api.add_namespace(jobs_ns)
    api.add_namespace(kinds_ns)
    api.add_namespace(notifications_ns)
    api.add_namespace(events_ns)
    api.add_namespace(subscriptions_ns)
    api.add_namespace(services_ns)
    api.add_namespace(callbacks_ns)
    api.add_namespace(handovers_ns)
    api.add_namespace(databases_ns)
    api.add_namespace(datasets_ns)
    api.add_namespace(users_ns)
    register_api(api)
    return blueprint, api
