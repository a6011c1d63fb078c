"""Everything a user or an operator of a prodinf can read, gathered as ``(place, text)``,
and the secrets planted in it looked for in every form they could be written in.

``Exposure.add(place, text)`` keeps one place (an API answer, a page, a log file, a
mail, a stored row, a command's output); ``Exposure.found(secrets)`` says which secret
shows in which place, so a failure names every leak at once.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote, quote_plus

from sqlalchemy import MetaData, select
from sqlalchemy.engine import Engine

__all__ = ["Exposure", "Secret", "forms_of", "mail_text", "store_rows"]


@dataclass(frozen=True)
class Secret:
    """A planted secret: what it is (for the message) and its value. ``inputs`` are the
    stored columns (``table.column``) that may hold it because a job needs it to run:
    the params it was submitted with, an event's payload, a notification's webhook."""

    name: str
    value: str
    inputs: frozenset[str] = frozenset()


def forms_of(value: str) -> set[str]:
    """``value`` as it could be written anywhere: itself, URL-encoded (a query string, a
    form), and base64 (in basic auth after a user name or on its own, in an SMTP login)."""
    forms = {value, quote(value, safe=""), quote_plus(value)}
    forms.add(base64.b64encode(value.encode()).decode().rstrip("="))
    return forms


def basic_forms(user: str, password: str) -> set[str]:
    """The ``Authorization: Basic`` value and an SMTP ``AUTH PLAIN`` of a login."""
    return {
        base64.b64encode(f"{user}:{password}".encode()).decode().rstrip("="),
        base64.b64encode(f"\0{user}\0{password}".encode()).decode().rstrip("="),
    }


@dataclass
class Exposure:
    places: list[tuple[str, str]] = field(default_factory=list)

    def add(self, place: str, text: Any) -> None:
        if not isinstance(text, str):
            text = json.dumps(text, default=str, ensure_ascii=False)
        self.places.append((place, text))

    def found(self, secrets: Iterable[tuple[Secret, set[str]]]) -> list[str]:
        """``"<secret> in <place>: <where>"`` for each secret (in any of its forms) a place
        shows, except the stored input columns the secret may be in."""
        leaks = []
        for secret, forms in secrets:
            for place, text in self.places:
                if place.startswith("store ") and place.split()[1] in secret.inputs:
                    continue
                at = min((i for i in (text.find(f) for f in forms) if i >= 0), default=-1)
                if at >= 0:
                    seen = " ".join(text[max(0, at - 60) : at + 60].split())
                    leaks.append(f"{secret.name} in {place}: ...{seen}...")
        return leaks


def mail_text(message: EmailMessage) -> str:
    """A mail as sent (headers and encoded parts) and each part decoded."""
    parts = [message.as_string()]
    for part in message.walk():
        if not part.is_multipart():
            parts.append(str(part.get_content()))
    return "\n".join(parts)


def store_rows(engine: Engine) -> list[tuple[str, str]]:
    """Every row of every table of the store's database, as ``("table.column", value)``."""
    meta = MetaData()
    meta.reflect(engine)
    out = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                for column, value in row._mapping.items():
                    if value is not None:
                        out.append((f"{table.name}.{column}", str(value)))
    return out
