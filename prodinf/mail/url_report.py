"""The mail of ``email_when_complete``: what a URL reported, or why there is no report.

Rendered from ``templates/url_report.txt`` and ``templates/url_report.html`` (autoescaped:
a document is whatever the URL returned). Credentials are masked before rendering.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from prodinf.exceptions import ValidationError
from prodinf.mail.message import one_line
from prodinf.mail.rendering import document_fields, mail_templates
from prodinf.redact import redact, redact_text

__all__ = ["OUTCOMES", "Outcome", "render_url_report"]


class Outcome(StrEnum):
    """What a notification found about its URL."""

    #: The URL reported a final ``status``.
    COMPLETE = "complete"
    #: It never finished before the deadline.
    DEADLINE = "deadline"
    #: It could not be read.
    FAILED = "failed"


#: Every outcome, in the order above.
OUTCOMES = tuple(Outcome)
_SUBJECT_ENDINGS = {
    Outcome.COMPLETE: "complete",
    Outcome.DEADLINE: "did not finish",
    Outcome.FAILED: "could not be checked",
}


def render_url_report(
    url: str,
    status: str | None,
    document: dict[str, Any] | None,
    outcome: str,
    reason: str | None,
) -> tuple[str, str, str]:
    """The subject, text and HTML of the mail that reports on ``url``.

    ``outcome`` is one of :data:`OUTCOMES`: ``complete`` (the URL reported a final
    ``status``; every field of ``document`` is listed), ``deadline`` (it never
    finished; ``status`` is the last one seen) or ``failed`` (it could not be
    read; ``reason`` says why). Credentials in the URL, the status, the reason and
    the document are masked.

    :raises ValidationError: ``outcome`` is not one of :data:`OUTCOMES`.
    """
    if outcome not in _SUBJECT_ENDINGS:
        raise ValidationError(
            f"outcome: must be one of {', '.join(OUTCOMES)}, not {outcome!r}", field="outcome"
        )
    shown_url = one_line(redact_text(url))
    context = {
        "url": shown_url,
        "status": None if status is None else redact_text(str(status)),
        "fields": document_fields(redact(document)) if document is not None else [],
        "outcome": outcome,
        "reason": redact_text(reason) if reason else None,
    }
    env = mail_templates()
    text = env.get_template("url_report.txt").render(context)
    html = env.get_template("url_report.html").render(context)
    return f"[prodinf] {shown_url}: {_SUBJECT_ENDINGS[Outcome(outcome)]}", text, html
