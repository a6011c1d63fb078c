"""Delivery: hand a mail to the SMTP server, or write it to the outbox when none is set.

smtplib's and the socket's errors become prodinf's: 4xx replies and network trouble
are transient (the email queue retries with backoff), 5xx refusals and TLS or login
set-up problems permanent. No message holds the SMTP password.
"""

from __future__ import annotations

import functools
import logging
import os
import smtplib
import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from prodinf import metrics
from prodinf.exceptions import PermanentError, ProdinfError, RemoteUnavailable
from prodinf.mail.message import Mail, build_message, one_line
from prodinf.mail.outbox import write_outbox
from prodinf.redact import redact_text

if TYPE_CHECKING:
    from email.message import EmailMessage

    from prodinf.config import Settings

__all__ = ["deliver"]

log = logging.getLogger(__name__)

_Refused = dict[str, tuple[int, bytes]]


def deliver(
    mail: Mail, settings: Settings, *, accepted: Callable[[str], None] | None = None
) -> str:
    """Send ``mail`` by SMTP, or write it to the outbox when ``smtp_host`` is unset.

    Returns its Message-ID. Safe to repeat: the same Message-ID overwrites the same
    outbox file (over SMTP the receiver sees the same id again).

    ``accepted(message_id)`` is called the moment the server has accepted the mail
    (its reply to the end of DATA), before the goodbye: a caller records the
    delivery there, so a process killed after that reply and before the record, the
    one window SMTP leaves for a second copy, lasts one commit.

    :raises ValidationError: a recipient, the Message-ID or a header is invalid.
    :raises RemoteUnavailable: the SMTP server is unreachable, timed out,
        disconnected or answered 4xx: retry later.
    :raises PermanentError: the SMTP server refused with 5xx, refused the login,
        or TLS could not be set up.
    :raises OSError: the outbox could not be written (a full disk, permissions).

    Each call is counted (``prodinf_notifications_total{channel="email"}``): delivered,
    outbox, or error.
    """
    try:
        message_id = _deliver(mail, settings, accepted)
    except Exception:
        metrics.notified("email", "error")
        raise
    metrics.notified("email", "delivered" if settings.smtp_host else "outbox")
    return message_id


def _deliver(mail: Mail, settings: Settings, accepted: Callable[[str], None] | None) -> str:
    message = build_message(mail, settings)
    if settings.smtp_host is None:
        path = write_outbox(message, mail.message_id, settings)
        log.info("mail %s to %s written to %s", mail.message_id, message["To"], path)
        if accepted is not None:
            accepted(mail.message_id)
        return mail.message_id
    try:
        refused = _send(
            message, settings, (lambda: accepted(mail.message_id)) if accepted else None
        )
    except (smtplib.SMTPException, OSError) as exc:
        raise _failure(exc, settings) from exc
    if refused:
        log.warning(
            "mail %s: %s refused some recipients, sent to the others: %s",
            mail.message_id,
            _server(settings),
            _scrub(_refusals(refused), settings),
        )
    log.info("mail %s to %s sent via %s", mail.message_id, message["To"], _server(settings))
    return mail.message_id


def _send(
    message: EmailMessage, settings: Settings, accepted: Callable[[], None] | None
) -> _Refused:
    """Hand ``message`` to the SMTP server, call ``accepted`` once it took it, then say
    goodbye; the recipients it refused. Raises smtplib's errors."""
    host = settings.smtp_host or ""
    client: smtplib.SMTP
    if settings.smtp_tls == "ssl":
        client = smtplib.SMTP_SSL(
            host, settings.smtp_port, timeout=settings.smtp_timeout, context=_tls_context()
        )
    else:
        client = smtplib.SMTP(host, settings.smtp_port, timeout=settings.smtp_timeout)
    try:
        if settings.smtp_tls == "starttls":
            # raises if not offered: never falls back to plain
            client.starttls(context=_tls_context())
        if settings.smtp_user:
            client.login(settings.smtp_user, _password(settings))
        refused = client.send_message(message)
        if accepted is not None:
            accepted()
    except BaseException:
        client.close()
        raise
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        # The server has taken the mail; a failed goodbye must not make it look unsent.
        client.close()
    return refused


def _tls_context() -> ssl.SSLContext:
    """The client's TLS context (certificates and host names verified), made once per
    process for the CA files OpenSSL is pointed at (``SSL_CERT_FILE``, ``SSL_CERT_DIR``):
    loading the trusted CAs costs about 20 ms, more than the rest of a delivery."""
    return _context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _context_for(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return ssl.create_default_context()


def _failure(exc: OSError, settings: Settings) -> ProdinfError:
    """The prodinf error that says what went wrong with the SMTP server."""
    where = _server(settings)

    def by_code(code: int, message: str, **details: Any) -> ProdinfError:
        kind = PermanentError if code >= 500 else RemoteUnavailable
        return kind(_scrub(message, settings), server=where, smtp_code=code, **details)

    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code = min((code for code, _ in exc.recipients.values()), default=0)
        text = f"{where} refused every recipient: {_refusals(exc.recipients)}"
        return by_code(code, text, refused=sorted(exc.recipients))
    if isinstance(exc, smtplib.SMTPSenderRefused):
        text = f"{where} refused the sender {exc.sender}: {_reply(exc.smtp_code, exc.smtp_error)}"
        return by_code(exc.smtp_code, text)
    if isinstance(exc, smtplib.SMTPDataError):
        text = f"{where} refused the message: {_reply(exc.smtp_code, exc.smtp_error)}"
        return by_code(exc.smtp_code, text)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        text = f"{where} refused the login of {settings.smtp_user!r}: "
        return by_code(exc.smtp_code, text + _reply(exc.smtp_code, exc.smtp_error))
    if isinstance(exc, smtplib.SMTPResponseException):  # the greeting, HELO, STARTTLS, ...
        return by_code(exc.smtp_code, f"{where} answered {_reply(exc.smtp_code, exc.smtp_error)}")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        if isinstance(exc.__context__, TimeoutError):  # how smtplib reports a read timeout
            return _failure(exc.__context__, settings)
        text = f"{where} closed the connection: {exc}"
        return RemoteUnavailable(_scrub(text, settings), server=where)
    if isinstance(exc, smtplib.SMTPException):  # no STARTTLS or AUTH offered, no common mechanism
        return PermanentError(_scrub(f"{where}: {exc}", settings), server=where)
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = f"{where}: its TLS certificate is not trusted: {exc.verify_message or exc}"
        return PermanentError(_scrub(text, settings), server=where)
    if isinstance(exc, TimeoutError):
        text = f"{where} did not answer within {settings.smtp_timeout:g} s"
        return RemoteUnavailable(text, server=where)
    text = f"{where} is unreachable: {exc.strerror or exc}"
    return RemoteUnavailable(_scrub(text, settings), server=where)


def _server(settings: Settings) -> str:
    return f"SMTP server {settings.smtp_host}:{settings.smtp_port}"


def _password(settings: Settings) -> str:
    return settings.smtp_password.get_secret_value() if settings.smtp_password else ""


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {one_line(text)}"


def _refusals(refused: Mapping[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{rcpt}: {_reply(code, text)}" for rcpt, (code, text) in refused.items())


def _scrub(text: str, settings: Settings) -> str:
    """``text`` with URL credentials and the SMTP password masked, whatever echoed them."""
    return redact_text(text, secrets=[_password(settings) or ""])
