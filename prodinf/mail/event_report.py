"""The mail a subscription with ``run: {email: [...]}`` sends about an event.

Rendered from ``templates/event_report.txt`` and ``templates/event_report.html``
(autoescaped); the dataset's attributes and the payload are listed field by field,
with credentials masked.
"""

from __future__ import annotations

from typing import Any

from prodinf.mail.message import one_line
from prodinf.mail.rendering import document_fields, mail_templates
from prodinf.redact import redact

__all__ = ["render_event_report"]


def render_event_report(
    event: dict[str, Any], subscription: str, link: str | None, subject: str | None = None
) -> tuple[str, str, str]:
    """The subject, text and HTML of the mail about ``event`` (``id, type, dataset,
    payload, source``; ``dataset`` as templates see it: its name and attributes).

    ``subject`` replaces the default ``[prodinf] <type> <dataset>``; ``link`` is the
    event's page in the portal, when the portal's public address is known.
    """
    shown = redact(event)
    dataset = dict(shown.get("dataset") or {})
    name = dataset.pop("name", None)
    context = {
        "event": shown,
        "dataset": name,
        "attributes": document_fields(dataset) if dataset else [],
        "fields": document_fields(shown["payload"]) if shown.get("payload") else [],
        "subscription": subscription,
        "link": link,
    }
    env = mail_templates()
    text = env.get_template("event_report.txt").render(context)
    html = env.get_template("event_report.html").render(context)
    default = f"[prodinf] {shown['type']}" + (f" {name}" if name else "")
    return one_line(subject or default), text, html
