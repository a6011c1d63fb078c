"""``/api/v1/services``: the remote services this prodinf can run jobs on, as its services
file (``PRODINF_SERVICES``) states them: the names of the variables holding tokens and
secrets and whether each is set, never a value; URLs with their passwords masked."""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource

from prodinf.exceptions import NotFound
from prodinf.portal.api.jobs import error
from prodinf.portal.api.openapi import array, obj
from prodinf.portal.current import runtime
from prodinf.remote.services import describe_service, load_services

ns = Namespace("services", description="Where jobs can run besides this prodinf's own kinds")

SERVICE = obj(
    {
        "name": {"type": "string"},
        "type": {"type": "string", "description": "prodinf or http"},
        "url": {"type": "string", "description": "With any password masked"},
    },
    ["name", "type", "url"],
    description="How a service is reached, authenticated and read: the names of the "
    "variables holding its secrets and whether each is set, never a value",
)
service_model = ns.schema_model("Service", SERVICE)
service_list = ns.schema_model(
    "ServiceList",
    obj(
        {"source": {"type": "string", "description": "The services file"}, "items": array(SERVICE)},
        ["source", "items"],
    ),
)


@ns.route("")
class ServiceList(Resource):  # type: ignore[misc]
    @ns.response(200, "Every remote service", service_list)
    def get(self) -> dict[str, Any]:
        """Every remote service: another prodinf or an HTTP job service, and how it is
        reached, authenticated and read."""
        services = load_services(runtime().settings.services)
        return {
            "source": services.source,
            "items": [describe_service(s) for s in services.services],
        }


@ns.route("/<string:name>")
class ServiceItem(Resource):  # type: ignore[misc]
    @ns.response(200, "The service", service_model)
    @ns.response(404, "No such service", error)
    def get(self, name: str) -> dict[str, Any]:
        """One remote service."""
        service = load_services(runtime().settings.services).by_name.get(name)
        if service is None:
            raise NotFound(f"no service {name!r}", field="name")
        return describe_service(service)
