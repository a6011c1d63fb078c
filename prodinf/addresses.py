"""Email addresses as prodinf accepts them: a recipient, or a sender with a display name.

A foundation: settings check ``PRODINF_MAIL_FROM`` with it, mail and notifications
check every recipient with it.
"""

from __future__ import annotations

import re
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import parseaddr

from prodinf.exceptions import ValidationError

__all__ = ["validate_address", "validate_sender"]

_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def validate_address(addr: str, field: str = "address") -> str:
    """``addr`` as a bare address (``ada@example.org``), or a ``ValidationError`` naming
    ``field``.

    Pragmatic, not RFC 5322 in full: one ``@``; no whitespace or line break anywhere
    (a ``\\r\\n`` would smuggle in headers such as ``Bcc:``); ASCII only; a dot-atom
    before the ``@``; a domain of DNS labels with a dot, or ``localhost``. Spaces
    around it are dropped.
    """

    def invalid(why: str) -> ValidationError:
        return ValidationError(f"{field}: {addr!r} is not an email address: {why}", field=field)

    if not isinstance(addr, str):
        raise invalid("not text")
    value = addr.strip(" \t")
    if not value:
        raise invalid("it is empty")
    if any(char.isspace() or not char.isprintable() for char in value):
        raise invalid("it holds a space, line break or control character")
    if not value.isascii():
        raise invalid("only ASCII addresses are supported")
    if len(value) > 254:
        raise invalid("it is longer than 254 characters")
    if value.count("@") != 1:
        raise invalid("it needs exactly one @")
    local, domain = value.split("@")
    if len(local) > 64 or not _LOCAL_PART.fullmatch(local):
        raise invalid("the part before @ is not valid")
    labels = domain.split(".")
    if not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise invalid("the domain is not valid")
    if len(labels) < 2 and domain.lower() != "localhost":
        raise invalid("the domain needs a dot (or is localhost)")
    # What is accepted must read back the same through the stdlib's own parsers,
    # since they are what write the header.
    try:
        parsed = Address(addr_spec=value)
    except (ValueError, IndexError, HeaderParseError):
        raise invalid("it does not parse") from None
    if parsed.addr_spec != value or parseaddr(value) != ("", value):
        raise invalid("it does not parse")
    return value


def validate_sender(value: str, field: str = "mail_from") -> str:
    """A From value: an address, optionally with a display name (``prodinf <x@y.org>``)."""
    if any(char in value for char in "\r\n\0"):
        raise ValidationError(f"{field}: must be one line", field=field)
    name, address = parseaddr(value)
    address = validate_address(address or value, field=field)
    return str(Address(display_name=name, addr_spec=address)) if name else address
