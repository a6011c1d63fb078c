"""Masking of credentials in text and JSON before it is stored, shown or logged."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["redact", "redact_text"]

# scheme://user:password@host -> scheme://user:***@host
_URL_CREDENTIALS = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s'\"]*):(?P<pw>[^@\s'\"]+)@"
)
# password=..., "password": "...", token: ... in free text
_KEYED_SECRET = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|api_key)\b[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<value>[^\s\"',;&]+)",
    re.IGNORECASE,
)
_SECRET_KEYS = ("password", "passwd", "secret", "token", "api_key")


def redact_text(text: str) -> str:
    """``text`` with URL passwords and ``password=...`` values replaced by ``***``."""
    text = _URL_CREDENTIALS.sub(r"\g<head>:***@", text)
    return _KEYED_SECRET.sub(r"\g<key>***", text)


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with every credential masked (keys and strings)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            key: "***"
            if isinstance(key, str) and key.lower().endswith(_SECRET_KEYS) and item
            else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value
