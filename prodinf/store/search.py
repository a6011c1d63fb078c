"""Finding jobs: what ``JobStore.list_jobs`` filters and sorts by, as one query.

Filters: kind, status, a start of the id, text in the params, submitter and a range
of creation times. Sorts: by creation, last update or duration, ascending or
descending (newest created first unless asked otherwise).

*Duration* is how long a job has run: from its start (the first step taken) to its
end, or to now while it has not ended. A job that never started (queued, or
cancelled while queued) has none; sorted by duration, those come last either way.

*Text in the params* is matched, ignoring case, in the JSON text of the params as
pages show them: with passwords masked, so a search cannot guess a password one
character at a time. The database narrows the jobs with ``LIKE`` on the stored JSON
(``%`` and ``_`` in the text are escaped, so they match themselves); each candidate
is then matched on its masked params here, which is also what makes the answer the
same on every store (JSONB's text form and SQLite's differ in escapes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Float, Text, case, cast, func, literal, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from prodinf.exceptions import ValidationError
from prodinf.redact import redact
from prodinf.store.models import JobRow
from prodinf.store.types import UTCDateTime

__all__ = [
    "ORDERS",
    "SORTS",
    "JobSearch",
    "duration_seconds",
    "human_duration",
    "parse_when",
    "search_jobs",
]

#: What jobs can be sorted by: creation time, last update, duration.
SORTS = ("created", "updated", "duration")
#: Ascending or descending.
ORDERS = ("asc", "desc")

#: The columns a job's summary shows.
_SUMMARY = (
    JobRow.id,
    JobRow.kind,
    JobRow.status,
    JobRow.progress_done,
    JobRow.progress_total,
    JobRow.progress_message,
    JobRow.submitted_by,
    JobRow.created_at,
    JobRow.updated_at,
    JobRow.started_at,
    JobRow.finished_at,
)


@dataclass(frozen=True)
class JobSearch:
    """Which jobs to list, and in what order. Empty strings mean "any".

    :raises ValidationError: naming ``sort``, ``order``, ``created_after`` or
        ``created_before`` (a datetime without a time zone).
    """

    kind: str | None = None
    status: str | None = None
    #: The job's id starts with this (any case).
    id_prefix: str | None = None
    #: Text in the job's params, ignoring case.
    text: str | None = None
    #: Who submitted it (the whole name, ignoring case).
    submitted_by: str | None = None
    #: Created at or after this moment.
    created_after: datetime | None = None
    #: Created before this moment.
    created_before: datetime | None = None
    sort: str = "created"
    order: str = "desc"

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise ValidationError(f"sort must be one of {', '.join(SORTS)}", field="sort")
        if self.order not in ORDERS:
            raise ValidationError("order must be asc or desc", field="order")
        for name in ("created_after", "created_before"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValidationError(f"{name} must carry a time zone", field=name)

    def conditions(self) -> list[ColumnElement[bool]]:
        """The WHERE clause: every filter given."""
        found: list[ColumnElement[bool]] = []
        if self.kind:
            found.append(JobRow.kind == self.kind)
        if self.status:
            found.append(JobRow.status == self.status)
        if self.id_prefix and self.id_prefix.strip():
            found.append(JobRow.id.startswith(self.id_prefix.strip().lower(), autoescape=True))
        if self.submitted_by and self.submitted_by.strip():
            # lower() on both sides: MariaDB compares without case by default, the others not
            found.append(func.lower(JobRow.submitted_by) == self.submitted_by.strip().lower())
        if self.created_after is not None:
            found.append(JobRow.created_at >= self.created_after)
        if self.created_before is not None:
            found.append(JobRow.created_at < self.created_before)
        needles = self.needles()
        if needles:
            stored = func.lower(cast(JobRow.params, Text))
            # the JSON text escapes quotes and backslashes, and (SQLite, MariaDB) non-ASCII
            forms = {n for text in needles for n in (text, _escaped(text, ascii_only=True))}
            found.append(or_(*(stored.contains(form, autoescape=True) for form in sorted(forms))))
        return found

    def needles(self) -> tuple[str, ...]:
        """The text to find in the params' JSON, lower case: as typed, and as JSON writes it
        inside a string (quotes and backslashes escaped)."""
        text = (self.text or "").strip().lower()
        if not text:
            return ()
        return tuple(sorted({text, _escaped(text, ascii_only=False)}))

    def ordering(self, now: datetime) -> list[Any]:
        """The ORDER BY clause; ties go by id so that pages never overlap."""
        if self.sort == "duration":
            took = _duration(now)
            key: ColumnElement[Any] = took.asc() if self.order == "asc" else took.desc()
            # never started: last, newest first (MariaDB has no NULLS LAST)
            last = case((took.is_(None), 1), else_=0)
            return [last, key, JobRow.created_at.desc(), JobRow.id]
        column = JobRow.created_at if self.sort == "created" else JobRow.updated_at
        return [column.asc() if self.order == "asc" else column.desc(), JobRow.id]


def search_jobs(
    session: Session, search: JobSearch, *, limit: int, offset: int, now: datetime
) -> tuple[list[Any], int]:
    """A page of the jobs ``search`` finds (rows of their summaries' columns, with
    ``started_at``; durations run to ``now``), and how many it finds in all.

    The page and the count are two queries: a window count (``count(*) OVER ()``)
    makes the database read every matching row to number a page of 50 (800 ms at a
    million jobs, against 1 ms for the page and 60 ms for a bare count)."""
    where = search.conditions()
    order = search.ordering(now)
    needles = search.needles()
    if needles:
        # every candidate is read (its params too) and matched on its masked params
        rows = session.execute(select(*_SUMMARY, JobRow.params).where(*where).order_by(*order))
        found = [row for row in rows if _holds(row.params, needles)]
        return found[offset : offset + limit], len(found)
    query = select(*_SUMMARY).where(*where).order_by(*order).limit(limit).offset(offset)
    page = session.execute(query).all()
    if offset == 0 and len(page) < limit:
        return list(page), len(page)  # all of them are on this page
    total = session.scalar(select(func.count()).select_from(JobRow).where(*where))
    return list(page), int(total or 0)


def duration_seconds(
    started_at: datetime | None, finished_at: datetime | None, now: datetime
) -> float | None:
    """Seconds a job has run: from its start to its end (to ``now`` while it has not
    ended); ``None`` if it never started."""
    if started_at is None:
        return None
    return round(((finished_at or now) - started_at).total_seconds(), 3)


def human_duration(seconds: float | None) -> str:
    """``seconds`` as a person says it: ``0.42 s``, ``2 min 3 s``, ``1 h 5 min``,
    ``2 d 3 h``; empty for None (a job not started)."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{int(seconds)} s"
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {rest} s"


def parse_when(raw: str, field: str, *, end_of_day: bool = False) -> datetime:
    """An ISO 8601 date or date and time typed by a user, as an aware datetime (UTC when
    it names no zone). A date alone is its first moment, or with ``end_of_day`` the
    first moment of the next day (so "until 2024-05-03" takes all of that day).

    :raises ValidationError: naming ``field``, for anything else.
    """
    text = raw.strip()
    try:
        if len(text) == 10:  # YYYY-MM-DD
            day = date.fromisoformat(text)
            start = datetime.combine(day, time(), tzinfo=UTC)
            return start + timedelta(days=1) if end_of_day else start
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"{field} must be an ISO 8601 date or time (2024-05-01 or 2024-05-01T12:00:00Z), "
            f"not {raw[:40]!r}",
            field=field,
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _escaped(text: str, *, ascii_only: bool) -> str:
    """``text`` as JSON writes it inside a string."""
    return json.dumps(text, ensure_ascii=ascii_only)[1:-1]


def _holds(params: Any, needles: Sequence[str]) -> bool:
    """Whether the params' JSON text, passwords masked, holds one of ``needles``."""
    shown = json.dumps(redact(params), ensure_ascii=False).lower()
    return any(needle in shown for needle in needles)


def _duration(now: datetime) -> ColumnElement[float]:
    """Seconds from ``started_at`` to ``finished_at`` (or ``now``), in SQL; NULL until started."""
    end = func.coalesce(JobRow.finished_at, literal(now, UTCDateTime()))
    return _Seconds(JobRow.started_at, end)


class _Seconds(FunctionElement[float]):
    """Seconds from the first datetime to the second, each store with its own arithmetic."""

    type = Float()
    name = "prodinf_seconds"
    inherit_cache = True


def _operands(element: _Seconds, compiler: SQLCompiler, **kw: Any) -> tuple[str, str]:
    start, end = (compiler.process(clause, **kw) for clause in element.clauses)
    return start, end


@compiles(_Seconds, "sqlite")
def _seconds_sqlite(element: _Seconds, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = _operands(element, compiler, **kw)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


@compiles(_Seconds, "postgresql")
def _seconds_postgresql(element: _Seconds, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = _operands(element, compiler, **kw)
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


@compiles(_Seconds, "mysql")
@compiles(_Seconds, "mariadb")
def _seconds_mysql(element: _Seconds, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = _operands(element, compiler, **kw)
    return f"(TIMESTAMPDIFF(MICROSECOND, {start}, {end}) / 1000000.0)"
