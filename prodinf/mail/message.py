"""A mail as prodinf sends it: the ``Mail`` payload, its MIME message, and address checks."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import TYPE_CHECKING

from prodinf.exceptions import ValidationError

if TYPE_CHECKING:
    from prodinf.config import Settings

__all__ = [
    "Mail",
    "build_message",
    "message_id_for",
    "one_line",
    "validate_address",
    "validate_sender",
]

#: Bodies are encoded 7-bit safe (quoted-printable or base64 when not ASCII), so any
#: relay accepts them, 8BITMIME or not.
_POLICY = policy.default.clone(cte_type="7bit")


@dataclass(frozen=True, kw_only=True)
class Mail:
    """One mail to send: recipients, subject, a text body and optionally an HTML one.

    ``message_id`` (``<something@domain>``) identifies the mail across redeliveries;
    ``headers`` are extra headers such as ``X-Prodinf-Job``.
    """

    to: list[str]
    subject: str
    text: str
    html: str | None = None
    message_id: str
    headers: dict[str, str] = field(default_factory=dict)


def message_id_for(key: str, domain: str = "prodinf") -> str:
    """A Message-ID that is the same every time for ``key`` (e.g. ``f"{job_id}:summary"``)."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}@{domain}>"


#: Headers build_message writes itself; extra headers may not replace them.
_OWN_HEADERS = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "auto-submitted",
        "return-path",
    }
)
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII but ":" (RFC 5322 field-name)
_MESSAGE_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")  # no space, "<", ">" or "@" inside


def build_message(mail: Mail, settings: Settings) -> EmailMessage:
    """``mail`` as a MIME message from ``settings.mail_from``: text/plain, and with ``html``
    a multipart/alternative of text/plain and text/html, both UTF-8.

    :raises ValidationError: a recipient, the Message-ID or an extra header is invalid.
    """
    if not mail.to:
        raise ValidationError("to: a mail needs at least one recipient", field="to")
    recipients = [validate_address(address, field="to") for address in mail.to]
    if not _MESSAGE_ID.fullmatch(mail.message_id):
        raise ValidationError(
            f"message_id: {mail.message_id!r} is not of the form <id@domain>", field="message_id"
        )
    message = EmailMessage(policy=_POLICY)
    message["From"] = settings.mail_from
    message["To"] = ", ".join(recipients)
    message["Subject"] = one_line(mail.subject)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = mail.message_id
    # RFC 3834: tells mail systems not to send vacation replies back to prodinf.
    message["Auto-Submitted"] = "auto-generated"
    for name, value in mail.headers.items():
        where = f"headers.{name}"
        if not _HEADER_NAME.fullmatch(name) or name.lower() in _OWN_HEADERS:
            raise ValidationError(f"{where}: not a header a mail may add", field=where)
        if name.lower().startswith("content-"):
            raise ValidationError(f"{where}: the MIME headers are set from the body", field=where)
        if any(char in value for char in "\r\n\0"):
            raise ValidationError(f"{where}: must be one line", field=where)
        message[name] = value
    message.set_content(mail.text, charset="utf-8")
    if mail.html is not None:
        message.add_alternative(mail.html, subtype="html", charset="utf-8")
    return message


def one_line(text: str) -> str:
    """``text`` with every run of whitespace, line breaks included, as one space."""
    return " ".join(text.split())


# -- addresses -------------------------------------------------------------------------------

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
