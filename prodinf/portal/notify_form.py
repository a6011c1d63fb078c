"""The notify inputs of the new-job form: who is mailed, or which URL is posted, when the
job ends. They are read from ``NotifySpec``, the model that checks ``notify`` in
``POST /api/v1/jobs``, so the form asks for exactly what the API takes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from werkzeug.datastructures import MultiDict

from prodinf.addresses import validate_address
from prodinf.engine.notices import NOTIFICATION_KIND, NotifySpec
from prodinf.engine.registry import Registry
from prodinf.exceptions import ValidationError
from prodinf.portal.params_form import Field, fields_for, params_from, problems

__all__ = ["notify_fields", "notify_from"]

#: Addresses may be typed separated by commas, semicolons, spaces or lines.
ADDRESS_SEPARATOR = r"[,;\s]+"


def notify_fields(registry: Registry) -> list[Field]:
    """The notify inputs, or none when this prodinf cannot notify (no notification kind)."""
    if NOTIFICATION_KIND not in registry:
        return []
    fields = fields_for(NotifySpec.model_json_schema(), prefix="notify")
    return [
        replace(
            f,
            separator=ADDRESS_SEPARATOR,
            placeholder="ada@example.org, grace@example.org",
            help=f"{f.help} Separate several with commas, spaces or new lines.",
        )
        if f.name == "email"
        else f
        for f in fields
    ]


def notify_from(
    form: MultiDict[str, str], fields: list[Field]
) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The ``notify`` a submitted form asks for (``None`` without an address or a URL),
    and every input it holds that is not valid (form key: message)."""
    if not fields:
        return None, {}
    typed, errors = params_from(form, fields)
    if not typed.get("email") and not typed.get("webhook"):
        return None, errors
    emails = typed.get("email")
    bad = []
    for address in emails if isinstance(emails, list) else ():
        try:
            validate_address(address, field="notify.email")
        except ValidationError as exc:
            bad.append(exc.message.removeprefix("notify.email: "))
    if bad:
        errors.setdefault("notify.email", "; ".join(bad))
        typed.pop("email")
    if not bad or typed.get("webhook"):  # else only the address was given, and is wrong
        found = problems(NotifySpec, typed, "notify", (f.key for f in fields))
        errors = {**found, **errors}
    return typed, errors
