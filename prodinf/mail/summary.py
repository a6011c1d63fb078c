"""The summary mail of a notification: what a URL reported, or why there is no report.

Rendered from ``templates/summary.txt`` and ``templates/summary.html`` (autoescaped:
a document is whatever the URL returned). Credentials are masked before rendering.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from prodinf.exceptions import ValidationError
from prodinf.mail.message import one_line
from prodinf.redact import redact, redact_text

__all__ = ["OUTCOMES", "render_summary"]

#: What a notification found: the URL finished, the deadline passed, or it could not be read.
OUTCOMES = ("complete", "deadline", "failed")
_SUBJECT_ENDINGS = {
    "complete": "complete",
    "deadline": "did not finish",
    "failed": "could not be checked",
}


def render_summary(
    url: str,
    status: str | None,
    document: dict[str, Any] | None,
    outcome: str,
    reason: str | None,
) -> tuple[str, str, str]:
    """The subject, text and HTML of the mail that reports on ``url``.

    ``outcome`` is one of :data:`OUTCOMES`: ``complete`` (the URL reported a final
    ``status``; every field of ``document`` is listed), ``deadline`` (it never
    finished; ``status`` is the last one seen) or ``failed`` (it could not be
    read; ``reason`` says why). Credentials in the URL, the status, the reason and
    the document are masked.

    :raises ValidationError: ``outcome`` is not one of :data:`OUTCOMES`.
    """
    if outcome not in _SUBJECT_ENDINGS:
        raise ValidationError(
            f"outcome: must be one of {', '.join(OUTCOMES)}, not {outcome!r}", field="outcome"
        )
    shown_url = one_line(redact_text(url))
    context = {
        "url": shown_url,
        "status": None if status is None else redact_text(str(status)),
        "fields": document_fields(redact(document)) if document is not None else [],
        "outcome": outcome,
        "reason": redact_text(reason) if reason else None,
    }
    env = mail_templates()
    text = env.get_template("summary.txt").render(context)
    html = env.get_template("summary.html").render(context)
    return f"[prodinf] {shown_url}: {_SUBJECT_ENDINGS[outcome]}", text, html


@dataclass(frozen=True)
class _Field:
    """One field of a document as the summary shows it; ``block`` when it spans lines."""

    name: str
    value: str
    block: bool


def document_fields(document: Any) -> list[_Field]:
    """Each field of ``document``: text as it is, nested values as indented JSON.

    A document that is not an object (a JSON list, a number) is one field, ``document``.
    """
    if not isinstance(document, Mapping):
        document = {"document": document}
    rows = []
    for key, value in document.items():
        name = redact_text(str(key))
        if isinstance(value, str):
            rows.append(_Field(name, value, "\n" in value))
        elif isinstance(value, Mapping | list | tuple):
            shown = json.dumps(value, indent=2, ensure_ascii=False, default=str)
            rows.append(_Field(name, shown, True))
        else:  # numbers, true/false, null: as JSON writes them
            rows.append(_Field(name, json.dumps(value, default=str), False))
    return rows


@lru_cache(maxsize=1)
def mail_templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
