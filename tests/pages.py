"""Reading the portal's pages as a test does: fetch a page, take a form's token, find an
element by id (its text), or the value an input shows."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from flask.testing import FlaskClient

__all__ = ["csrf", "has_class", "input_value", "page", "text_of"]


class _Finder(HTMLParser):
    """Collects the text inside the element with a given id (and its descendants), and
    that element's attributes."""

    VOID = frozenset({"input", "br", "img", "meta", "link", "hr", "source", "wbr"})

    def __init__(self, element_id: str) -> None:
        super().__init__()
        self.element_id = element_id
        self.depth = 0
        self.found = False
        self.attrs: dict[str, str | None] = {}
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        if self.depth:
            self.depth += 1
        elif dict(attrs).get("id") == self.element_id:
            if not self.found:
                self.attrs = dict(attrs)
            self.depth, self.found = 1, True

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag not in self.VOID:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.parts.append(data)


def _find(html: str, element_id: str) -> _Finder:
    finder = _Finder(element_id)
    finder.feed(html)
    assert finder.found, f"no element with id {element_id!r} on the page"
    return finder


def text_of(html: str, element_id: str) -> str:
    """The whitespace-normalised text of the element with ``element_id``; fails if absent."""
    return " ".join("".join(_find(html, element_id).parts).split())


def has_class(html: str, element_id: str, name: str) -> bool:
    """Whether the element with ``element_id`` carries the class ``name``; fails if absent."""
    return name in (_find(html, element_id).attrs.get("class") or "").split()


def input_value(html: str, name: str) -> str | None:
    """The ``value`` of the ``<input name=...>``, as written in the page (escaped)."""
    match = re.search(rf'<input[^>]*name="{re.escape(name)}"[^>]*value="([^"]*)"', html)
    return match.group(1) if match else None


def page(client: FlaskClient, path: str, status: int = 200) -> str:
    """GET ``path``; the answer must have ``status``; its HTML."""
    response = client.get(path)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def csrf(client: FlaskClient, path: str) -> str:
    """Load ``path`` as a user would before posting one of its forms; its token."""
    value = input_value(client.get(path).get_data(as_text=True), "csrf_token")
    assert value, f"no form token on {path}"
    return value
