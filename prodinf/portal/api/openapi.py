"""What makes ``/api/v1/swagger.json`` exact: typed query args, JSON schemas with
their nulls, lengths and enums, and the answers each operation really gives.

OpenAPI 2 (what flask-restx writes) has no ``null`` type: a value that may be null
says ``x-nullable``, which its readers (schemathesis among them) understand. An
optional query arg the API reads an empty value of as absent (``?status=``, what a
search form sends) says ``allowEmptyValue``. The answers the portal gives before an
operation runs (portal/hardening.py: 403 for another site's ``Origin``, 413 for a
body too large, 415 for one that is not JSON, on every call that changes something)
are added to each operation here, in one place, as is the list of kinds a
submission may name (this app's registry).
"""

from __future__ import annotations

import copy
from typing import Any

from flask_restx import Api, SchemaModel

from prodinf.portal.current import runtime
from prodinf.status import JobStatus

__all__ = [
    "ERROR",
    "JOB_SUMMARY",
    "NO_NUL",
    "TRIMMED",
    "PortalApi",
    "arg",
    "array",
    "nullable",
    "obj",
    "page_args",
    "text",
]

#: Where a pattern ends: the end of the text in ECMAScript and Python alike (Python's
#: ``$`` also matches before a trailing line break).
END = "(?![\\s\\S])"
#: Text with no NUL character (no job store keeps one).
NO_NUL = "^[^\\u0000]*$"
#: Text with no NUL, that neither starts nor ends with a space (an idempotency key:
#: MariaDB ignores trailing spaces when it compares).
TRIMMED = f"^[^\\s\\u0000](?:[^\\u0000]*[^\\s\\u0000])?{END}"
#: Methods of the calls that change something (hardening.MUTATING).
MUTATING = ("post", "put", "patch", "delete")

STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
NUMBER: dict[str, Any] = {"type": "number"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
OBJECT: dict[str, Any] = {"type": "object"}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or null (which an enum must then list too)."""
    if "enum" in schema:
        schema = {**schema, "enum": [*schema["enum"], None]}
    return {**schema, "x-nullable": True}


def text(max_length: int | None = None, *, min_length: int = 0, **more: Any) -> dict[str, Any]:
    """A string of ``min_length`` to ``max_length`` characters, none of them NUL."""
    schema: dict[str, Any] = {"type": "string", "pattern": NO_NUL, **more}
    if min_length:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    return schema


def array(items: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **more}


def page_of(items: dict[str, Any], *, next_link: bool = False) -> dict[str, Any]:
    """A page of a list: its ``items``, how many match in all, the page's limit and
    offset (and with ``next_link``, the URL of the next page or null)."""
    properties = {
        "items": array(items),
        "total": {"type": "integer"},
        "limit": {"type": "integer"},
        "offset": {"type": "integer"},
    }
    if next_link:
        properties["next"] = nullable({"type": "string", "description": "The next page, if any"})
    return obj(properties, list(properties))


def obj(
    properties: dict[str, dict[str, Any]],
    required: list[str] | tuple[str, ...] = (),
    *,
    closed: bool = False,
    **more: Any,
) -> dict[str, Any]:
    """An object with ``properties``; ``closed``: no others (a request the API refuses
    with a 400 naming an unknown field)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties, **more}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def arg(
    description: str, type: str = "string", *, blank: bool = True, **schema: Any
) -> dict[str, Any]:
    """An optional query arg; ``blank``: an empty value is read as absent."""
    spec: dict[str, Any] = {"in": "query", "type": type, "description": description, **schema}
    if blank:
        spec["allowEmptyValue"] = True
    return spec


def page_args(what: str, *, most: int = 500, default: int = 50) -> dict[str, dict[str, Any]]:
    """``limit`` and ``offset`` of a list (``int_arg``: an empty value is a 400)."""
    return {
        "limit": arg(
            f"Page size, 1-{most} (default {default})",
            "integer",
            blank=False,
            minimum=1,
            maximum=most,
            default=default,
        ),
        "offset": arg(
            f"{what} to skip (default 0)",
            "integer",
            blank=False,
            minimum=0,
            maximum=10**9,
            default=0,
        ),
    }


ERROR = SchemaModel(
    "Error",
    obj(
        {
            "message": {"type": "string", "description": "What is wrong, and what to do"},
            "field": nullable({"type": "string", "description": "The field at fault"}),
            "details": {"type": "object", "description": "More, for some errors"},
        },
        ["message", "field"],
    ),
)

PROGRESS = obj(
    {"done": INTEGER, "total": INTEGER, "message": nullable(STRING)}, ["done", "total", "message"]
)
#: A job as lists, cancel and retry answer it.
JOB_SUMMARY = obj(
    {
        "id": STRING,
        "kind": STRING,
        "status": {"type": "string", "enum": list(JobStatus)},
        "progress": PROGRESS,
        "submitted_by": nullable(STRING),
        "created_at": TIME,
        "updated_at": TIME,
        "finished_at": nullable(TIME),
        "url": {"type": "string", "description": "The job in the API"},
    },
    ["id", "kind", "status", "progress", "submitted_by", "created_at", "updated_at", "url"],
)


class PortalApi(Api):  # type: ignore[misc]
    """flask-restx's Api, its document finished by :func:`finish`."""

    _finished: dict[str, Any] | None = None

    @property
    def __schema__(self) -> dict[str, Any]:
        if self._finished is None:
            made: dict[str, Any] = super().__schema__
            if "paths" not in made:  # flask-restx's {"error": ...}, logged
                return made
            rt = runtime()
            self._finished = finish(made, _submittable_kinds(), auth=rt.settings.auth == "users")
        return self._finished


def _submittable_kinds() -> list[str]:
    """The kinds ``POST /jobs`` takes: this app's, but neither the internal ones nor those
    with a submission of their own (handovers)."""
    return sorted(
        kind.name
        for kind in runtime().registry.all()
        if not kind.internal and kind.submitted_at is None
    )


BEFORE_ANY_VIEW = {
    "403": "Refused: another site's page (its Origin is not this portal)",
    "413": "The body is larger than PRODINF_MAX_REQUEST_BYTES; `field` is body",
    "415": "The body is not JSON (send Content-Type: application/json, or no body)",
}


def _no_nul(param: dict[str, Any]) -> None:
    """A text query arg or path part says it holds no NUL (hardening refuses one)."""
    text_arg = param.get("in") in ("query", "path") and param.get("type") == "string"
    if text_arg and not {"enum", "pattern", "format"} & set(param):
        param["pattern"] = NO_NUL


#: What portal/access.py answers before any view, with PRODINF_AUTH=users.
ACCESS_ANSWERS = {
    "401": "No valid token: Authorization: Bearer <token> is missing, malformed, expired "
    "or revoked",
    "403": "The token's user may not: the message names the role this needs",
}


def _answers_of_access(answers: dict[str, Any], error: dict[str, Any]) -> None:
    for code, description in ACCESS_ANSWERS.items():
        if code in answers:  # another reason for the same status
            answers[code]["description"] += f"; or: {description}"
        else:
            answers[code] = {"description": description, "schema": error}
    answers["401"].setdefault(
        "headers", {"WWW-Authenticate": {"type": "string", "description": "Bearer"}}
    )


def finish(schema: dict[str, Any], kinds: list[str], *, auth: bool) -> dict[str, Any]:
    """Add the answers of portal/hardening.py to every call that changes something, and
    the kinds a submission may name; without authentication (``PRODINF_AUTH=none``),
    drop the token the document would otherwise ask for."""
    schema = copy.deepcopy(schema)  # models' schemas are shared by every app
    if not auth:
        schema.pop("security", None)
        schema.pop("securityDefinitions", None)
        for operations in schema["paths"].values():
            for operation in operations.values():
                if isinstance(operation, dict):
                    operation.pop("security", None)
    error = {"$ref": "#/definitions/Error"}
    schema.setdefault("definitions", {}).setdefault("Error", ERROR.__schema__)
    for operations in schema["paths"].values():
        for param in operations.get("parameters", []):
            _no_nul(param)
        for method, operation in operations.items():
            if method == "parameters":
                continue
            for param in operation.get("parameters", []):
                _no_nul(param)
            answers = operation.setdefault("responses", {})
            if auth and operation.get("security") != []:  # it takes a token
                _answers_of_access(answers, error)
            params = [*operations.get("parameters", []), *operation.get("parameters", [])]
            if any(param.get("in") in ("query", "path") for param in params):
                answers.setdefault(
                    "400", {"description": "A query arg or path part with a NUL", "schema": error}
                )
            if method not in MUTATING:
                continue
            for code, description in BEFORE_ANY_VIEW.items():
                if code in answers:  # another reason for the same status
                    answers[code]["description"] += f"; or: {description}"
                else:
                    answers[code] = {"description": description, "schema": error}
    submission = schema["definitions"].get("Submission")
    if submission is not None:
        submission["properties"]["kind"]["enum"] = kinds
    return schema
