"""``/api/v1/kinds``: every registered kind with its params schema."""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource

from prodinf.engine.registry import Kind
from prodinf.portal.current import runtime

ns = Namespace("kinds", description="The kinds of job this prodinf runs")


def describe_kind(kind: Kind[Any]) -> dict[str, Any]:
    return {
        "name": kind.name,
        "queue": runtime().settings.queue_for(kind.queue),
        "description": kind.description,
        "params_schema": kind.schema(),
    }


@ns.route("")
class KindList(Resource):  # type: ignore[misc]
    def get(self) -> dict[str, Any]:
        """Every registered kind, with the JSON schema of its params."""
        return {"items": [describe_kind(kind) for kind in runtime().registry.all()]}


@ns.route("/<string:name>")
@ns.response(404, "No such kind")
class KindItem(Resource):  # type: ignore[misc]
    def get(self, name: str) -> dict[str, Any]:
        """One kind and the JSON schema of its params."""
        from prodinf.exceptions import NotFound

        rt = runtime()
        if name not in rt.registry:
            raise NotFound(f"unknown kind {name!r}", field="name")
        return describe_kind(rt.registry.get(name))
