"""Choices of a param that are known only when prodinf runs (the healthcheck catalogue's
checks), declared on the params model so the web form offers them::

    from prodinf import choices

    class Params(BaseModel):
        names: list[str] = Field(
            default_factory=list,
            title="Checks",
            json_schema_extra=choices(lambda: [("reachable", "reachable (generic)")]),
        )

The kind's JSON schema then lists them as JSON Schema's labelled enumeration: the
field's (or, for a list, its items') ``oneOf`` of ``{"const", "title", "description"}``.
Every schema asks ``source`` again, so a choice added at run time shows up. Choices
fixed in code need none of this: a ``Literal`` or ``Enum`` (item) type is offered as
they are. Declaring choices does not validate: the model's own validator does that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Choice", "choices"]

log = logging.getLogger(__name__)

#: A choice: its value, or (value, label), or (value, label, description).
Choice = str | tuple[str, str] | tuple[str, str, str]


def choices(source: Callable[[], Iterable[Choice]]) -> Callable[[dict[str, Any]], None]:
    """A ``json_schema_extra`` for a field (a list or a single value) whose valid values
    ``source`` gives. If ``source`` fails, the schema lists none (and the form shows
    the field as text) rather than failing every page that shows the schema."""

    def extra(schema: dict[str, Any]) -> None:
        try:
            listed = [_const(choice) for choice in source()]
        except Exception:
            log.exception("the choices of a param could not be listed")
            return
        target = schema
        if schema.get("type") == "array":
            target = schema.setdefault("items", {})
        elif "anyOf" in schema:  # an optional value: its choices sit in the non-null branch
            target = next((o for o in schema["anyOf"] if o.get("type") != "null"), schema)
        target["oneOf"] = listed

    return extra


def _const(choice: Choice) -> dict[str, str]:
    if isinstance(choice, str):
        return {"const": choice, "title": choice}
    value, label, *more = choice
    return {"const": value, "title": label, **({"description": more[0]} if more else {})}
