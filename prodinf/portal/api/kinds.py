"""``/api/v1/kinds``: every registered kind with its params schema."""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource

from prodinf.engine.registry import Kind
from prodinf.portal.api.jobs import error
from prodinf.portal.api.openapi import array, obj
from prodinf.portal.current import runtime

ns = Namespace("kinds", description="The kinds of job this prodinf runs")

KIND = obj(
    {
        "name": {"type": "string"},
        "queue": {"type": "string", "description": "The queue its jobs run on"},
        "description": {"type": "string"},
        "params_schema": {"type": "object", "description": "The JSON schema of its params"},
    },
    ["name", "queue", "description", "params_schema"],
)
kind_model = ns.schema_model("Kind", KIND)
kind_list = ns.schema_model("KindList", obj({"items": array(KIND)}, ["items"]))


def describe_kind(kind: Kind[Any]) -> dict[str, Any]:
    return {
        "name": kind.name,
        "queue": runtime().settings.queue_for(kind.queue),
        "description": kind.description,
        "params_schema": kind.schema(),
    }


@ns.route("")
class KindList(Resource):  # type: ignore[misc]
    @ns.response(200, "Every kind", kind_list)
    def get(self) -> dict[str, Any]:
        """Every registered kind, with the JSON schema of its params."""
        return {"items": [describe_kind(kind) for kind in runtime().registry.all()]}


@ns.route("/<string:name>")
@ns.response(404, "No such kind", error)
class KindItem(Resource):  # type: ignore[misc]
    @ns.response(200, "The kind", kind_model)
    def get(self, name: str) -> dict[str, Any]:
        """One kind and the JSON schema of its params."""
        from prodinf.exceptions import NotFound

        rt = runtime()
        if name not in rt.registry:
            raise NotFound(f"unknown kind {name!r}", field="name")
        return describe_kind(rt.registry.get(name))
