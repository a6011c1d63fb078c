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

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Float, Text, and_, case, cast, func, literal, or_, select
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
    "COUNT_LIMIT",
    "ORDERS",
    "SORTS",
    "JobPage",
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
#: Counting the jobs a search finds stops here: past it, a page says "at least" (so a
#: page of a million jobs costs no full count; Elasticsearch's ``track_total_hits``).
COUNT_LIMIT = 10_000

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

    @property
    def keyed(self) -> bool:
        """Whether pages are found by their key (a cursor past a row), not by an offset."""
        return self.sort != "duration" and not self.needles()

    def ordering(self, now: datetime, *, reverse: bool = False) -> list[Any]:
        """The ORDER BY clause (``reverse``: the other way, to read the page before a
        cursor); ties go by id, the same way, so that pages never overlap."""
        if self.sort == "duration":
            took = _duration(now)
            key: ColumnElement[Any] = took.asc() if self.order == "asc" else took.desc()
            # never started: last, newest first (MariaDB has no NULLS LAST)
            last = case((took.is_(None), 1), else_=0)
            return [last, key, JobRow.created_at.desc(), JobRow.id]
        column = JobRow.created_at if self.sort == "created" else JobRow.updated_at
        if (self.order == "asc") != reverse:
            return [column.asc(), JobRow.id.asc()]
        return [column.desc(), JobRow.id.desc()]


@dataclass(frozen=True)
class JobPage:
    """A page of the jobs a search finds: ``rows`` (the summaries' columns and
    ``started_at``), how many match (``total``: exact, or when ``exact`` is false at least
    that many: counting stops at :data:`COUNT_LIMIT`), and the cursors of the pages after
    and before it (None at either end)."""

    rows: list[Any]
    total: int
    exact: bool
    next: str | None
    previous: str | None


def search_jobs(
    session: Session,
    search: JobSearch,
    *,
    limit: int,
    now: datetime,
    offset: int = 0,
    after: str | None = None,
    before: str | None = None,
) -> JobPage:
    """A page of the jobs ``search`` finds (durations run to ``now``): the first ``limit``
    past ``offset``, or the ``limit`` after the cursor ``after`` or before ``before``
    (from a page's ``next`` and ``previous``).

    Sorted by creation or update, a cursor is the last row's key: the page is read from
    the index, so a page a million rows deep costs what the first does. Sorted by
    duration (a key computed at read time) or searched by text (matched here, on the
    masked params), a cursor is an offset. The total is counted apart, and only up to
    :data:`COUNT_LIMIT` (a window count read every matching row to number a page: 800 ms
    at a million jobs).

    :raises ValidationError: naming ``after`` or ``before``, for a cursor of another sort.
    """
    where = search.conditions()
    needles = search.needles()
    cursor = _Cursor.parse(after, "after", search) or _Cursor.parse(before, "before", search)
    backward = before is not None and cursor is not None
    if cursor is not None and cursor.offset is not None:
        offset = cursor.offset if not backward else max(0, cursor.offset - limit)
        cursor, backward = None, False
    if needles:
        # every candidate is read (its params too) and matched on its masked params
        query = select(*_SUMMARY, JobRow.params).where(*where).order_by(*search.ordering(now))
        found = [row for row in session.execute(query) if _holds(row.params, needles)]
        rows, total, exact = found[offset : offset + limit + 1], len(found), True
    elif cursor is None and not backward:
        ordering = search.ordering(now)
        query = select(*_SUMMARY).where(*where).order_by(*ordering).limit(limit + 1)
        if offset and search.keyed:
            # skip the offset on the index alone (ids), then read the page's rows
            skipped = (
                select(JobRow.id).where(*where).order_by(*ordering).limit(limit + 1).offset(offset)
            ).subquery()
            query = select(*_SUMMARY).join(skipped, JobRow.id == skipped.c.id).order_by(*ordering)
        elif offset:
            query = query.offset(offset)
        rows = list(session.execute(query).all())
        total, exact = _count(session, where, offset, rows, limit)
    else:
        assert cursor is not None
        query = select(*_SUMMARY).where(*where, cursor.seek(search, backward))
        ordering = search.ordering(now, reverse=backward)
        rows = list(session.execute(query.order_by(*ordering).limit(limit + 1)).all())
        total, exact = _count(session, where, None, rows, limit)
    more = len(rows) > limit
    rows = rows[:limit]
    if backward:
        rows.reverse()
    return JobPage(
        rows=rows,
        total=total,
        exact=exact,
        next=_cursor(search, rows[-1] if rows else None, offset + limit, wanted=more or backward),
        previous=_cursor(
            search,
            rows[0] if rows else None,
            offset,
            wanted=more if backward else bool(cursor or offset),
        ),
    )


def _count(
    session: Session,
    where: list[ColumnElement[bool]],
    offset: int | None,
    rows: list[Any],
    limit: int,
) -> tuple[int, bool]:
    """How many jobs ``where`` finds, counted up to :data:`COUNT_LIMIT` (true when exact)."""
    if offset == 0 and len(rows) <= limit:
        return len(rows), True  # all of them are on this page
    capped = select(literal(1)).select_from(JobRow).where(*where).limit(COUNT_LIMIT + 1)
    found = int(session.scalar(select(func.count()).select_from(capped.subquery())) or 0)
    return min(found, COUNT_LIMIT), found <= COUNT_LIMIT


def _cursor(search: JobSearch, row: Any, offset: int, *, wanted: bool) -> str | None:
    """The cursor of a page next to this one: past ``row`` (sorted by a key), or at
    ``offset``; None when there is no such page (not ``wanted``, or no row)."""
    if not wanted or row is None:
        return None
    if search.keyed:
        return _Cursor.of(search, row).token()
    return _Cursor(search.sort, search.order, offset=offset).token()


@dataclass(frozen=True)
class _Cursor:
    """Where a page starts: past the row whose sort key is ``value`` and ``id`` (sorted
    by creation or update), or past ``offset`` rows (by duration, or a text search). Its
    token is URL-safe base64 of JSON, carrying the sort it belongs to."""

    sort: str
    order: str
    value: datetime | None = None
    id: str | None = None
    offset: int | None = None

    @classmethod
    def of(cls, search: JobSearch, row: Any) -> _Cursor:
        value = row.created_at if search.sort == "created" else row.updated_at
        return cls(search.sort, search.order, value=value, id=row.id)

    @classmethod
    def parse(cls, token: str | None, field: str, search: JobSearch) -> _Cursor | None:
        if token is None:
            return None
        try:
            padded = token + "=" * (-len(token) % 4)
            sort, order, value, row_id, offset = json.loads(base64.urlsafe_b64decode(padded))
            cursor = cls(
                str(sort),
                str(order),
                datetime.fromisoformat(value) if value is not None else None,
                str(row_id) if row_id is not None else None,
                int(offset) if offset is not None else None,
            )
        except (ValueError, TypeError):
            raise ValidationError(
                f"{field} must be a cursor from a page's next or previous", field=field
            ) from None
        if (cursor.sort, cursor.order) != (search.sort, search.order):
            raise ValidationError(
                f"{field} is a cursor of another sort (sort={cursor.sort}, order={cursor.order})",
                field=field,
            )
        keyed = cursor.value is not None and cursor.id is not None
        if keyed and cursor.value is not None and cursor.value.tzinfo is None:
            keyed = False
        counted = cursor.offset is not None and cursor.offset >= 0
        if (keyed, counted) != (search.keyed, not search.keyed):
            raise ValidationError(
                f"{field} must be a cursor from a page's next or previous", field=field
            )
        return cursor

    def token(self) -> str:
        value = self.value.isoformat() if self.value is not None else None
        raw = json.dumps([self.sort, self.order, value, self.id, self.offset])
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def seek(self, search: JobSearch, backward: bool) -> ColumnElement[bool]:
        """The rows past this cursor in the page's direction: ``key <= v and (key < v or
        id < i)`` (descending forward), whose first half the index answers."""
        column = JobRow.created_at if search.sort == "created" else JobRow.updated_at
        value, row_id = self.value, self.id
        assert value is not None and row_id is not None
        down = (search.order == "desc") != backward
        if down:
            return and_(column <= self.value, or_(column < self.value, JobRow.id < self.id))
        return and_(column >= self.value, or_(column > self.value, JobRow.id > self.id))


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
    # Whole seconds from strftime, the microseconds from the text ("... HH:MM:SS.ffffff",
    # as SQLAlchemy stores a datetime): julianday keeps milliseconds at best, and its
    # float of a day number is off by up to a millisecond, which put a 4 ms job before
    # a 6 ms one in a sort by duration.
    return (
        f"((strftime('%s', {end}) - strftime('%s', {start}))"
        f" + (substr({end}, 21) - substr({start}, 21)) / 1000000.0)"
    )


@compiles(_Seconds, "postgresql")
def _seconds_postgresql(element: _Seconds, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = _operands(element, compiler, **kw)
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


@compiles(_Seconds, "mysql")
@compiles(_Seconds, "mariadb")
def _seconds_mysql(element: _Seconds, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = _operands(element, compiler, **kw)
    return f"(TIMESTAMPDIFF(MICROSECOND, {start}, {end}) / 1000000.0)"
