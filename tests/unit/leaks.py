"""A secret for a test to leak, the way it must be shown, and the logs to look for it in.

No secret may appear in a page, an API response, a log line, an email or a
job's history (docs/DESIGN "Rules that hold everywhere"). A test that leaks
one takes the ``logs`` fixture (every record of the ``prodinf`` loggers, down
to DEBUG) and asserts the secret is in none of ``logged(logs)``.
"""

from __future__ import annotations

import logging

import pytest

__all__ = ["MASKED_URL", "SECRET_URL", "logged"]

SECRET_URL = "postgresql://u:secret@h/db"
MASKED_URL = "postgresql://u:***@h/db"

_format = logging.Formatter()


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the captured records say: messages with their arguments, tracebacks
    and stacks, one record a line."""
    lines = []
    for record in caplog.records:
        parts = [record.name, record.getMessage()]
        if record.exc_info:
            parts.append(_format.formatException(record.exc_info))
        if record.stack_info:
            parts.append(record.stack_info)
        lines.append(" ".join(parts))
    return "\n".join(lines)
