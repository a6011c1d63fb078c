"""Masking of credentials in text and JSON before it is stored, shown or logged.

Every pattern here runs in time linear in the text: params and error messages are
user-controlled and can be long, and they are masked on every read.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["redact", "redact_text", "secret_values", "url_credentials"]

# The "://" of a URL: after a scheme character, so a URL is found wherever it starts.
_SCHEME_END = re.compile(r"(?<=[a-zA-Z0-9+.\-])://")
# A stretch of text a URL credential cannot cross (it never holds spaces or quotes).
_TOKEN = re.compile(r"[^\s'\"]+")
# password=..., "password": "...", token: ... in free text; a request header a service
# echoes back ('Authorization': 'Basic dXNlcjpwdw==', X-Api-Key: ...), its scheme kept
_KEYED_SECRET = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|api[_-]key|(?:proxy-)?authorization)\b"
    r"[\"']?\s*[:=]\s*[\"']?(?:(?:basic|bearer|digest|token)\s+)?)"
    r"(?P<value>[^\s\"',;&]+)",
    re.IGNORECASE,
)
_SECRET_KEYS = ("password", "passwd", "secret", "token", "api_key", "api-key", "authorization")


def _url_passwords(token: str) -> list[tuple[int, int]]:
    """Where each URL password in ``token`` is: ``(start, end)`` of what follows
    ``://user:`` up to the LAST ``@`` before the next URL.

    A password may hold an unencoded ``@`` or ``:`` (``mysql://u:S3cret@Pass99@host/db``):
    cutting at the first ``@`` would show half of it, so the whole stretch up to the
    last ``@`` is taken (a path or query holding ``@`` after a ``host:port`` is masked
    too: better too much than too little). One pass over the token: linear.
    """
    starts = [m.end() for m in _SCHEME_END.finditer(token)]
    found = []
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(token)
        at = token.rfind("@", start, end)
        if at < 0:
            continue
        colon = token.find(":", start, at)
        if colon < 0 or "/" in token[start:colon] or colon + 1 == at:
            continue  # no password: "://user@host", "://host/path:x@y", "://user:@host"
        found.append((colon + 1, at))
    return found


def _mask_token(match: re.Match[str]) -> str:
    token = match.group()
    if "://" not in token or "@" not in token:
        return token
    shown, last = [], 0
    for start, end in _url_passwords(token):
        shown.append(token[last:start] + "***")
        last = end
    return "".join(shown) + token[last:]


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


def redact(value: Any, *, secrets: Iterable[str] = ()) -> Any:
    """A copy of a JSON-like value with every credential masked (keys and strings), and
    each of ``secrets`` wherever a string holds it (see :func:`redact_text`)."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        return redact_text(value, secrets=secrets)
    if isinstance(value, dict):
        return {
            key: "***"
            if isinstance(key, str) and key.lower().endswith(_SECRET_KEYS) and item
            else redact(item, secrets=secrets)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item, secrets=secrets) for item in value]
    return value


def url_credentials(url: str) -> list[str]:
    """The credentials ``url`` carries, in each form a server it is sent to may echo them:
    its password as written and decoded, and the basic-auth value of its user and
    password (``Authorization: Basic <base64>``, without its ``=`` padding); longest
    first, for ``redact_text``'s ``secrets``."""
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:  # not a URL (a bad port): it carries nothing usable
        return []
    if not password:
        return []
    plain = unquote(password)
    basic = base64.b64encode(f"{unquote(user or '')}:{plain}".encode()).decode().rstrip("=")
    return sorted({password, plain, basic}, key=len, reverse=True)


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
                    found.extend(token[a:b] for a, b in _url_passwords(token))
        elif secret and isinstance(item, int | float) and not isinstance(item, bool):
            found.append(str(item))

    walk(value, False)
    # longest first: a secret that holds another is masked whole
    return sorted(set(found), key=len, reverse=True)
