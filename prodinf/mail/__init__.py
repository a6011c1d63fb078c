"""Mail: build a message, deliver it by SMTP or to the outbox folder; the report mails.

``deliver(mail, settings)`` is the one way prodinf sends mail. With ``smtp_host``
unset, each message is written to ``<home>/outbox/<message id>.eml`` instead, so one
machine needs no mail server and every mail stays readable (the portal's ``/outbox``).

What a caller (a step on the email queue) can rely on:

* Delivery is keyed by the Message-ID the caller chooses (:func:`message_id_for`
  makes a deterministic one). A redelivered message keeps its id: the outbox
  overwrites the same file, and a receiving mail system can recognise the repeat.
* Errors come from :mod:`prodinf.exceptions`: :class:`RemoteUnavailable` when the
  server is unreachable, slow, disconnects or answers 4xx (retry later), and
  :class:`PermanentError` when it refuses with 5xx, the login is refused or TLS
  cannot be set up (repeating cannot help). Bad addresses or headers are a
  :class:`ValidationError` naming the field. No error message holds the SMTP password.
* If the server accepts some recipients and refuses others, the mail has gone to
  the accepted ones: that is logged as a warning and counts as delivered, since a
  retry would send a second copy to everyone who already has it.

Usage from a step::

    subject, text, html = render_url_report(url, status, document, "complete", None)
    mail = Mail(
        to=[address],
        subject=subject,
        text=text,
        html=html,
        message_id=message_id_for(f"{job_id}:summary"),
        headers={"X-Prodinf-Job": job_id},
    )
    deliver(mail, settings)
"""

from __future__ import annotations

from prodinf.addresses import validate_address, validate_sender
from prodinf.mail.delivery import deliver
from prodinf.mail.event_report import render_event_report
from prodinf.mail.handover_report import render_handover_report
from prodinf.mail.job_report import render_job_report
from prodinf.mail.message import Mail, build_message, message_id_for
from prodinf.mail.outbox import (
    OutboxEntry,
    OutboxMessage,
    outbox_dir,
    outbox_message,
    outbox_messages,
    outbox_name,
)
from prodinf.mail.url_report import OUTCOMES, Outcome, render_url_report

__all__ = [
    "OUTCOMES",
    "Mail",
    "OutboxEntry",
    "OutboxMessage",
    "Outcome",
    "build_message",
    "deliver",
    "message_id_for",
    "outbox_dir",
    "outbox_message",
    "outbox_messages",
    "outbox_name",
    "render_event_report",
    "render_handover_report",
    "render_job_report",
    "render_url_report",
    "validate_address",
    "validate_sender",
]
