"""The params form of a kind: its inputs read from the kind's JSON schema, what a
submitted form means as params, and a job's params as the form's inputs (run again)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prodinf.exceptions import ValidationError

__all__ = ["Field", "fields_for", "label_of", "params_from", "values_of"]


@dataclass(frozen=True)
class Field:
    """One input of the params form, read from a property of the kind's JSON schema."""

    name: str
    label: str
    widget: str  # text, number, checkbox, select or json
    required: bool = False
    help: str = ""
    default: Any = None
    step: str | None = None
    minimum: Any = None
    maximum: Any = None
    choices: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The form key, spelled as ``ValidationError.field`` names it."""
        return f"params.{self.name}"

    @property
    def initial(self) -> str:
        if self.default is None:
            return ""
        if self.widget == "json":
            return json.dumps(self.default)
        return str(self.default)

    def parse(self, raw: str) -> Any:
        """The JSON value for ``raw``; left as text when it does not parse, so the kind's
        validation names the field with its own message."""
        try:
            if self.widget == "json":
                return json.loads(raw)
            if self.widget == "number":
                return int(raw) if self.step == "1" else float(raw)
        except ValueError:
            if self.widget == "json":
                raise ValidationError(f"{self.key}: not valid JSON", field=self.key) from None
        return raw


#: Words of a param's name as a label spells them.
_WORDS = {"src": "source", "tgt": "target", "uri": "URI", "url": "URL", "id": "ID"}


def label_of(name: str, title: str | None) -> str:
    """A field's label: its title when the model gives one, else its name in words
    (``src_uri`` is "Source URI", not pydantic's "Src Uri")."""
    if title and title != name.replace("_", " ").title():
        return title
    words = [_WORDS.get(word, word) for word in name.split("_")]
    first = words[0]
    return " ".join([first[:1].upper() + first[1:], *words[1:]])


def fields_for(schema: Mapping[str, Any]) -> list[Field]:
    """The form inputs for a kind's params schema, in the schema's order."""
    defs = schema.get("$defs", {})
    required = set(schema.get("required", ()))
    fields = []
    for name, prop in schema.get("properties", {}).items():
        prop = _concrete(prop, defs)
        json_type = prop.get("type")
        common: dict[str, Any] = {
            "name": name,
            "label": label_of(name, prop.get("title")),
            "required": name in required,
            "help": prop.get("description", ""),
            "default": prop.get("default"),
        }
        if "enum" in prop:
            fields.append(Field(widget="select", choices=tuple(map(str, prop["enum"])), **common))
        elif json_type == "boolean":
            fields.append(Field(widget="checkbox", **common))
        elif json_type in ("integer", "number"):
            fields.append(
                Field(
                    widget="number",
                    step="1" if json_type == "integer" else "any",
                    minimum=prop.get("minimum"),
                    maximum=prop.get("maximum"),
                    **common,
                )
            )
        elif json_type == "string":
            fields.append(Field(widget="text", **common))
        else:  # arrays, objects, unions: typed as JSON
            fields.append(Field(widget="json", **common))
    return fields


def _concrete(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """``prop`` with a ``$ref`` resolved and an optional (``anyOf`` with null) unwrapped."""
    prop = dict(prop)
    ref = prop.pop("$ref", None)
    if isinstance(ref, str):
        prop = {**defs.get(ref.rsplit("/", 1)[-1], {}), **prop}
    options = [o for o in prop.get("anyOf", ()) if o.get("type") != "null"]
    if len(options) == 1:
        prop.pop("anyOf")
        prop = {**_concrete(options[0], defs), **prop}
    return prop


def params_from(form: Mapping[str, str], fields: list[Field]) -> dict[str, Any]:
    """The params a submitted form holds; empty inputs are left out so defaults apply."""
    params: dict[str, Any] = {}
    for field in fields:
        if field.widget == "checkbox":
            params[field.name] = field.key in form
        elif (raw := form.get(field.key, "")).strip():
            params[field.name] = field.parse(raw)
    return params


def values_of(params: Mapping[str, Any], fields: list[Field]) -> dict[str, str]:
    """The form's inputs holding ``params`` (what ``params_from`` reads back)."""
    values: dict[str, str] = {}
    for f in fields:
        if f.name not in params or params[f.name] is None:
            continue
        value = params[f.name]
        if f.widget == "checkbox":
            if value:
                values[f.key] = "on"
        elif f.widget == "json":
            values[f.key] = json.dumps(value)
        else:
            values[f.key] = str(value)
    return values
