"""The mail that tells a job's ``notify.email`` addresses how the job ended.

Rendered from ``templates/job_report.txt`` and ``templates/job_report.html`` (autoescaped); the
job's result and error are listed field by field as in the URL summary, with
credentials masked.
"""

from __future__ import annotations

from typing import Any

from prodinf.mail.message import one_line
from prodinf.mail.rendering import document_fields, mail_templates
from prodinf.redact import redact, redact_text

__all__ = ["render_job_report"]


def render_job_report(job: dict[str, Any], link: str | None) -> tuple[str, str, str]:
    """The subject, text and HTML of the mail reporting ``job`` (a notification snapshot:
    ``id, kind, status, result, error, message, submitted_by, created_at, finished_at``).

    ``link`` is the job's page in the portal, when the portal's public address is known.
    """
    shown = redact(job)
    error = shown.get("error") or None
    context = {
        "job": shown,
        "link": link,
        "error_message": redact_text(str(error.get("message", ""))) if error else None,
        "error_step": error.get("step") if error else None,
        "fields": document_fields(shown["result"]) if shown.get("result") is not None else [],
    }
    env = mail_templates()
    text = env.get_template("job_report.txt").render(context)
    html = env.get_template("job_report.html").render(context)
    subject = f"[prodinf] {shown['kind']} job {str(shown['id'])[:8]} {shown['status']}"
    return one_line(subject), text, html
