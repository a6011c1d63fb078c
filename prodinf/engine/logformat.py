"""How prodinf's processes write their log lines (``PRODINF_LOG_FORMAT``): ``text`` for
people, or ``json``, one object a line for a log collector; credentials masked in both.

A JSON line holds ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
``process`` (its id) and ``process_name``, ``exc_info`` (the traceback as text) and
``stack_info`` when the record has them, and, on every record a job's step wrote,
``job_id``, ``kind``, ``step``, ``queue`` and ``attempt`` (:func:`steplog.step_of`).

The workers and the scheduler get these formatters through Celery's logging
(:mod:`prodinf.celery_app`); the portal and ``prodinf up`` through :func:`configure`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

from prodinf.engine.steplog import step_of
from prodinf.redact import redact_text

__all__ = ["TEXT_FORMAT", "JsonFormatter", "MaskingFormatter", "configure", "formatter_for"]

#: A text line of a process that Celery does not run (the portal, ``prodinf up``).
TEXT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"

LogFormat = Literal["text", "json"]


def _secrets(record: logging.LogRecord) -> tuple[str, ...]:
    found = step_of(record)
    return found[1] if found is not None else ()


class JsonFormatter(logging.Formatter):
    """One JSON object a line, its text masked."""

    def format(self, record: logging.LogRecord) -> str:
        found = step_of(record)
        secrets = found[1] if found is not None else ()
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(message, secrets=secrets),
            "process": record.process,
            "process_name": record.processName,
        }
        if found is not None:
            line.update(found[0].fields())
        if record.exc_info:
            # cached on the record, as logging.Formatter does, for the next handler
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = redact_text(record.exc_text, secrets=secrets)
        if record.stack_info:
            line["stack_info"] = redact_text(self.formatStack(record.stack_info), secrets=secrets)
        return json.dumps(line, ensure_ascii=False, default=str)


class MaskingFormatter(logging.Formatter):
    """A text formatter's lines (``inner``'s, or this one's ``fmt``), credentials masked:
    URL passwords, ``password=...`` and the secret values of the job whose step logged."""

    def __init__(self, fmt: str | None = None, *, inner: logging.Formatter | None = None) -> None:
        super().__init__(fmt)
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record) if self.inner is not None else super().format(record)
        return redact_text(text, secrets=_secrets(record))


def formatter_for(
    log_format: LogFormat, text: logging.Formatter | None = None
) -> logging.Formatter:
    """The formatter of ``log_format``: JSON, or ``text`` (a text formatter, by default
    one of :data:`TEXT_FORMAT`) with its lines masked."""
    if log_format == "json":
        return JsonFormatter()
    return MaskingFormatter(TEXT_FORMAT, inner=text)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` installs (one per process)."""


def configure(log_format: LogFormat, level: str | int, stream: IO[str] | None = None) -> None:
    """Send this process's log records at ``level`` and above to ``stream`` (stderr) in
    ``log_format``: one handler on the root logger, replaced by a second call. With
    ``json``, Python's warnings become log records too, so every line is JSON."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    logging.captureWarnings(log_format == "json")
