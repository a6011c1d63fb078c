"""The params form of a kind: its inputs read from the kind's JSON schema, what a
submitted form means as params (with every bad field named at once), and a job's params
as the form's inputs (run again).

A list param whose schema lists its choices (an ``enum`` of its items, or the labelled
``oneOf`` that :func:`prodinf.choices` writes) is a list of checkboxes; any other list of
plain values is typed as text, its items separated by commas (or as a JSON list).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from werkzeug.datastructures import MultiDict

from prodinf.exceptions import ValidationError

__all__ = [
    "Field",
    "Option",
    "fields_for",
    "label_of",
    "nearest",
    "params_from",
    "problems",
    "values_of",
]

#: What separates the items of a list typed as text, unless a field says otherwise.
COMMAS = r"[,\n]"


@dataclass(frozen=True)
class Option:
    """One choice of a select or a list of checkboxes."""

    value: str
    label: str
    help: str = ""


@dataclass(frozen=True)
class Field:
    """One input of the form, read from a property of a JSON schema."""

    name: str
    label: str
    widget: str  # text, password, number, checkbox, select, multi, list or json
    required: bool = False
    help: str = ""
    default: Any = None
    step: str | None = None
    minimum: Any = None
    maximum: Any = None
    choices: tuple[Option, ...] = ()
    #: The form keys' first part: ``params``, or ``notify`` for the notify inputs.
    prefix: str = "params"
    #: A regular expression: what separates a ``list`` widget's items.
    separator: str = COMMAS
    #: What an empty text input shows; a ``list`` says how to type its items.
    placeholder: str = ""

    @property
    def key(self) -> str:
        """The form key, spelled as ``ValidationError.field`` names it."""
        return f"{self.prefix}.{self.name}"

    @property
    def initial(self) -> str:
        """What the input shows before anything is typed: the default."""
        return "" if self.default is None else self.text(self.default)

    @property
    def preset(self) -> list[str]:
        """The choices a ``multi`` input has ticked before anything is picked."""
        return [str(v) for v in self.default] if isinstance(self.default, list) else []

    def text(self, value: Any) -> str:
        """``value`` as this input shows it (what :meth:`parse` reads back)."""
        if self.widget == "list" and isinstance(value, list):
            items = [str(item) for item in value]
            if not any(re.search(self.separator, item) or not item.strip() for item in items):
                return ", ".join(items)
        if self.widget in ("json", "list"):
            return json.dumps(value)
        return str(value)

    def options(self, picked: Iterable[str]) -> list[Option]:
        """The choices, then any picked value that is not one (kept, so validation names
        it rather than the form dropping it)."""
        known = {o.value for o in self.choices}
        extra = [Option(v, v, "not one of the choices") for v in picked if v not in known]
        return [*self.choices, *extra]

    def parse(self, raw: str) -> Any:
        """The JSON value for ``raw``; left as text when it does not parse, so the kind's
        validation names the field with its own message.

        :raises ValidationError: JSON typed into a list or JSON input does not parse.
        """
        try:
            if self.widget == "json" or (self.widget == "list" and raw.lstrip()[:1] == "["):
                return json.loads(raw)
            if self.widget == "list":
                return [item.strip() for item in re.split(self.separator, raw) if item.strip()]
            if self.widget == "number":
                return int(raw) if self.step == "1" else float(raw)
        except ValueError:
            if self.widget in ("json", "list"):
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


def fields_for(schema: Mapping[str, Any], prefix: str = "params") -> list[Field]:
    """The form inputs for a params schema, in the schema's order."""
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
            "prefix": prefix,
        }
        items = _concrete(prop.get("items", {}), defs) if json_type == "array" else {}
        if choices := _choices(prop):
            fields.append(Field(widget="select", choices=choices, **common))
        elif json_type == "array" and (choices := _choices(items)):
            fields.append(Field(widget="multi", choices=choices, **common))
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
            secret = prop.get("format") == "password" or prop.get("writeOnly")
            fields.append(Field(widget="password" if secret else "text", **common))
        elif json_type == "array" and items.get("type") in ("string", "integer", "number"):
            fields.append(Field(widget="list", placeholder="a, b, c or a JSON list", **common))
        else:  # lists of objects, objects, unions: typed as JSON
            fields.append(Field(widget="json", placeholder="JSON", **common))
    return fields


def _choices(prop: Mapping[str, Any]) -> tuple[Option, ...]:
    """The choices a schema lists: ``enum`` values, or ``oneOf`` constants with titles."""
    if "enum" in prop:
        return tuple(Option(str(v), str(v)) for v in prop["enum"])
    listed = prop.get("oneOf") or ()
    if listed and all(isinstance(o, dict) and "const" in o for o in listed):
        return tuple(
            Option(str(o["const"]), str(o.get("title", o["const"])), o.get("description", ""))
            for o in listed
        )
    return ()


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


def params_from(
    form: MultiDict[str, str], fields: list[Field]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The params a submitted form holds, and the inputs that do not parse (form key:
    message); empty inputs are left out so defaults apply."""
    params: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in fields:
        if field.widget == "checkbox":
            params[field.name] = field.key in form
        elif field.widget == "multi":
            picked = [value for value in form.getlist(field.key) if value.strip()]
            if picked:
                params[field.name] = picked
        elif (raw := form.get(field.key, "")).strip():
            try:
                params[field.name] = field.parse(raw)
            except ValidationError as exc:
                errors[field.key] = exc.message.removeprefix(f"{field.key}: ")
                params[field.name] = raw  # so validation passes over it, not "missing"
    return params, errors


def problems(
    model: type[BaseModel], data: Mapping[str, Any], prefix: str, keys: Iterable[str]
) -> dict[str, str]:
    """Every field of ``data`` that ``model`` refuses, as form key (one of ``keys``, or
    ``form``): message; empty if ``data`` is valid."""
    keys = set(keys)
    found: dict[str, list[str]] = {}
    try:
        model.model_validate(data)
    except PydanticValidationError as exc:
        for error in exc.errors():
            where = ".".join([prefix, *(str(part) for part in error["loc"])])
            message = str(error["msg"]).removeprefix("Value error, ")
            found.setdefault(nearest(where, keys), []).append(message)
    except ValidationError as exc:  # ours, raised straight through pydantic's validation
        where = nearest(exc.field or prefix, keys)
        found[where] = [exc.message.removeprefix(f"{exc.field}: ")]
    return {key: "; ".join(dict.fromkeys(messages)) for key, messages in found.items()}


def nearest(field: str | None, keys: set[str]) -> str:
    """The input an error belongs next to: ``field`` itself, its parent, or the form."""
    while field:
        if field in keys:
            return field
        field = field.rpartition(".")[0]
    return "form"


def values_of(data: Mapping[str, Any], fields: list[Field]) -> MultiDict[str, str]:
    """The form's inputs holding ``data`` (what ``params_from`` reads back)."""
    values: MultiDict[str, str] = MultiDict()
    for f in fields:
        value = data.get(f.name)
        if value is None:
            continue
        if f.widget == "checkbox":
            if value:
                values[f.key] = "on"
        elif f.widget == "multi" and isinstance(value, list):
            values.setlist(f.key, [str(item) for item in value])
        else:
            values[f.key] = f.text(value)
    return values
