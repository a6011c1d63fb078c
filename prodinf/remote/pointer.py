"""JSON pointers (RFC 6901): where a value is in a JSON document, such as ``/job/id``.

A pointer is ``""`` (the whole document) or a sequence of ``/``-prefixed reference
tokens, in which ``~1`` stands for ``/`` and ``~0`` for ``~``. A token reads a key of
an object, or a decimal index (no leading zero) of an array.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MISSING", "check_pointer", "resolve"]

#: What :func:`resolve` answers when the pointer finds nothing.
MISSING: Any = object()

_BAD_ESCAPE = re.compile(r"~(?![01])")
_INDEX = re.compile(r"^(?:0|[1-9][0-9]*)$")


def check_pointer(pointer: str) -> str:
    """``pointer`` if it is a JSON pointer.

    :raises ValueError: it does not start with ``/`` (and is not empty), or holds a
        ``~`` that is not ``~0`` or ``~1``.
    """
    if pointer and not pointer.startswith("/"):
        raise ValueError(f"{pointer!r} is not a JSON pointer: it must start with '/' (/job/id)")
    if _BAD_ESCAPE.search(pointer):
        raise ValueError(f"{pointer!r} is not a JSON pointer: '~' must be written ~0 ('/' is ~1)")
    return pointer


def resolve(document: Any, pointer: str) -> Any:
    """The value at ``pointer`` in ``document``, or :data:`MISSING`."""
    value = document
    if not pointer:
        return value
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            if token not in value:
                return MISSING
            value = value[token]
        elif isinstance(value, list):
            if not _INDEX.match(token) or int(token) >= len(value):
                return MISSING
            value = value[int(token)]
        else:
            return MISSING
    return value
