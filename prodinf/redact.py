"""Masking of credentials in text and JSON before it is stored, shown or logged.

Every pattern here runs in time linear in the text: params and error messages are
user-controlled and can be long, and they are masked on every read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["redact", "redact_text", "secret_values"]

# scheme://user:password@host -> scheme://user:***@host. The match starts at "://"
# (after one scheme character), never at every letter of a long word, and the
# password stops at the first "@": see _mask_token for why that keeps it linear.
_URL_CREDENTIALS = re.compile(r"(?<=[a-zA-Z0-9+.\-])(?P<head>://[^:/@\s'\"]*):(?P<pw>[^@\s'\"]+)@")
# A stretch of text a URL credential cannot cross (it never holds spaces or quotes).
_TOKEN = re.compile(r"[^\s'\"]+")
# password=..., "password": "...", token: ... in free text
_KEYED_SECRET = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|api_key)\b[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<value>[^\s\"',;&]+)",
    re.IGNORECASE,
)
_SECRET_KEYS = ("password", "passwd", "secret", "token", "api_key")


def _mask_token(match: re.Match[str]) -> str:
    token = match.group()
    if "://" not in token or "@" not in token:
        return token
    # Only the part up to the last "@" can hold a credential. Cutting there means
    # every password scan that starts ends at an "@" and so matches, consuming its
    # text: no scan is repeated from the next "://" (which made "a://:a://:..." quadratic).
    end = token.rindex("@") + 1
    return _URL_CREDENTIALS.sub(r"\g<head>:***@", token[:end]) + token[end:]


def redact_text(text: str, *, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL passwords, ``password=...`` values and each of ``secrets`` (known
    secret values, such as the SMTP password, wherever they were echoed) replaced by ``***``.

    The one masking function: every URL, message and value prodinf shows goes through it.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _TOKEN.sub(_mask_token, text)
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


def secret_values(value: Any) -> list[str]:
    """The secrets a JSON-like value holds (a job's params): the values under the keys
    :func:`redact` masks, ``SecretStr`` values and URL passwords, for ``redact_text``'s
    ``secrets`` wherever they may be echoed on their own (a step's log)."""
    found: list[str] = []

    def walk(item: Any, secret: bool) -> None:
        if hasattr(item, "get_secret_value"):
            walk(item.get_secret_value(), True)
        elif isinstance(item, dict):
            for key, sub in item.items():
                walk(sub, secret or (isinstance(key, str) and key.lower().endswith(_SECRET_KEYS)))
        elif isinstance(item, list | tuple):
            for sub in item:
                walk(sub, secret)
        elif isinstance(item, str) and item:
            if secret:
                found.append(item)
            for token in _TOKEN.findall(item):
                if "://" in token and "@" in token:
                    end = token.rindex("@") + 1
                    found.extend(m.group("pw") for m in _URL_CREDENTIALS.finditer(token[:end]))
        elif secret and isinstance(item, int | float) and not isinstance(item, bool):
            found.append(str(item))

    walk(value, False)
    # longest first: a secret that holds another is masked whole
    return sorted(set(found), key=len, reverse=True)
