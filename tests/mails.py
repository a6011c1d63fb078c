"""A sample mail for the mail tests, and a password to keep out of everything they show."""

from __future__ import annotations

from typing import Any

from prodinf.mail import Mail, message_id_for

__all__ = ["PASSWORD", "URL", "a_mail"]

PASSWORD = "hunter2-S3cret"
#: A status URL with credentials: what a summary mail shows must mask them.
URL = f"https://reporter:{PASSWORD}@status.example.org/jobs/42"


def a_mail(**changes: Any) -> Mail:
    """A one-recipient text mail with a fixed Message-ID; ``changes`` replace its fields."""
    fields: dict[str, Any] = {
        "to": ["ada@example.org"],
        "subject": "Report ready",
        "text": "Your report is ready.\n",
        "message_id": message_id_for("job-1:summary"),
    }
    return Mail(**{**fields, **changes})
