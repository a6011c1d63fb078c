"""A mail as prodinf sends it: the ``Mail`` payload, its MIME message, and address checks."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import TYPE_CHECKING

from prodinf.addresses import validate_address
from prodinf.exceptions import ValidationError

if TYPE_CHECKING:
    from prodinf.config import Settings

__all__ = [
    "Mail",
    "build_message",
    "message_id_for",
    "one_line",
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
