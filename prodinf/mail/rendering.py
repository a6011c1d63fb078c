"""What both report mails share: their Jinja2 templates and how a JSON document is listed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from prodinf.redact import redact_text

__all__ = ["document_fields", "mail_templates"]


@dataclass(frozen=True)
class DocumentField:
    """One field of a document as the summary shows it; ``block`` when it spans lines."""

    name: str
    value: str
    block: bool


def document_fields(document: Any) -> list[DocumentField]:
    """Each field of ``document``: text as it is, nested values as indented JSON.

    A document that is not an object (a JSON list, a number) is one field, ``document``.
    """
    if not isinstance(document, Mapping):
        document = {"document": document}
    rows = []
    for key, value in document.items():
        name = redact_text(str(key))
        if isinstance(value, str):
            rows.append(DocumentField(name, value, "\n" in value))
        elif isinstance(value, Mapping | list | tuple):
            shown = json.dumps(value, indent=2, ensure_ascii=False, default=str)
            rows.append(DocumentField(name, shown, True))
        else:  # numbers, true/false, null: as JSON writes them
            rows.append(DocumentField(name, json.dumps(value, default=str), False))
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
