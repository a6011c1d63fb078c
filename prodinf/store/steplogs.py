"""What steps logged: one row per line, kept with the step's attempt (migration 0010).

Each line has a ``seq`` that is unique within its job and grows in the order lines
are committed: writers take the job's row lock to number theirs, so a reader
following a job with ``after=<seq>`` never misses a line committed later with a
lower number. The lines of a job go with it when it is deleted (``ON DELETE
CASCADE``). The engine's ``steplog`` decides what to keep; this module reads and
writes the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Connection

from prodinf.exceptions import NotFound
from prodinf.store.models import JOBS, Base
from prodinf.store.repository import JobStore
from prodinf.store.types import UTCDateTime

__all__ = [
    "STEP_LOGS",
    "LogLine",
    "StoredLine",
    "as_text",
    "attempt_lines",
    "drop_through",
    "latest_lines",
    "line_text",
    "lock_job",
    "read_lines",
    "write_lines",
]

STEP_LOGS = Table(
    "prodinf_step_logs",
    Base.metadata,
    Column(
        "job_id",
        String(36),
        ForeignKey("prodinf_jobs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("step", String(100), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("level", String(10), nullable=False),
    Column("logger", String(200), nullable=False),
    Column("message", Text, nullable=False),
)


@dataclass(frozen=True)
class LogLine:
    """One line a step logged, masked and cut, not yet numbered."""

    at: datetime
    level: str
    logger: str
    message: str


@dataclass(frozen=True)
class StoredLine:
    """What a writer needs to know of a line already stored for its attempt."""

    seq: int
    size: int
    at: datetime
    logger: str
    message: str


def lock_job(conn: Connection, job_id: str) -> bool:
    """Lock the job's row (the order every writer takes); False if the job is gone."""
    found = conn.scalar(select(JOBS.c.id).where(JOBS.c.id == job_id).with_for_update())
    return found is not None


def write_lines(
    conn: Connection,
    job_id: str,
    step: str,
    attempt: int,
    lines: Sequence[LogLine],
    *,
    first_seq: int | None = None,
) -> list[int]:
    """Insert ``lines`` for the attempt, numbered after the job's last line (or from
    ``first_seq``, a number freed in this transaction); the numbers given. The caller
    holds the job's lock (:func:`lock_job`)."""
    if not lines:
        return []
    if first_seq is None:
        last = conn.scalar(select(func.max(STEP_LOGS.c.seq)).where(STEP_LOGS.c.job_id == job_id))
        first_seq = (last or 0) + 1
    seqs = list(range(first_seq, first_seq + len(lines)))
    conn.execute(
        insert(STEP_LOGS),
        [
            {
                "job_id": job_id,
                "seq": seq,
                "step": step,
                "attempt": attempt,
                "at": line.at,
                "level": line.level,
                "logger": line.logger,
                "message": line.message,
            }
            for seq, line in zip(seqs, lines, strict=True)
        ],
    )
    return seqs


def attempt_lines(conn: Connection, job_id: str, step: str, attempt: int) -> list[StoredLine]:
    """The lines stored for one attempt of a step, oldest first (a step that ran before,
    and waited, and runs again, goes on with them)."""
    rows = conn.execute(
        select(STEP_LOGS.c.seq, STEP_LOGS.c.at, STEP_LOGS.c.logger, STEP_LOGS.c.message)
        .where(
            STEP_LOGS.c.job_id == job_id,
            STEP_LOGS.c.step == step,
            STEP_LOGS.c.attempt == attempt,
        )
        .order_by(STEP_LOGS.c.seq)
    )
    return [StoredLine(seq, len(message), at, logger, message) for seq, at, logger, message in rows]


def drop_through(conn: Connection, job_id: str, step: str, attempt: int, seq: int) -> None:
    """Delete the attempt's lines numbered ``seq`` or lower."""
    conn.execute(
        delete(STEP_LOGS).where(
            STEP_LOGS.c.job_id == job_id,
            STEP_LOGS.c.step == step,
            STEP_LOGS.c.attempt == attempt,
            STEP_LOGS.c.seq <= seq,
        )
    )


def _line(row: Any) -> dict[str, Any]:
    return {
        "step": row.step,
        "attempt": row.attempt,
        "seq": row.seq,
        "at": row.at.isoformat(),
        "level": row.level,
        "logger": row.logger,
        "message": row.message,
    }


def line_text(item: dict[str, Any]) -> str:
    """One line as text: ``at level [step#attempt] logger: message``."""
    return (
        f"{item['at'][:23]} {item['level']:<7} [{item['step']}#{item['attempt']}] "
        f"{item['logger']}: {item['message']}"
    )


def as_text(items: list[dict[str, Any]]) -> str:
    """Lines as plain text, one per line (:func:`line_text`)."""
    return "".join(line_text(item) + "\n" for item in items)


def read_lines(
    store: JobStore,
    job_id: str,
    *,
    step: str | None = None,
    attempt: int | None = None,
    after: int = 0,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """The job's lines numbered after ``after``, oldest first, at most ``limit``;
    only those of ``step`` and ``attempt`` when given.

    :raises NotFound: no job ``job_id``.
    """
    query = select(STEP_LOGS).where(STEP_LOGS.c.job_id == job_id, STEP_LOGS.c.seq > after)
    if step is not None:
        query = query.where(STEP_LOGS.c.step == step)
    if attempt is not None:
        query = query.where(STEP_LOGS.c.attempt == attempt)
    with store.transaction() as conn:
        if conn.scalar(select(JOBS.c.id).where(JOBS.c.id == job_id)) is None:
            raise NotFound(f"no job {job_id!r}", field="id")
        rows = conn.execute(query.order_by(STEP_LOGS.c.seq).limit(limit)).all()
    return [_line(row) for row in rows]


def latest_lines(store: JobStore, job_id: str, per_step: int) -> dict[str, dict[str, Any]]:
    """For each step of the job that logged: its latest attempt that logged, how many
    lines that attempt has, and its newest ``per_step`` lines (oldest first)."""
    with store.transaction() as conn:
        latest = conn.execute(
            select(STEP_LOGS.c.step, func.max(STEP_LOGS.c.attempt))
            .where(STEP_LOGS.c.job_id == job_id)
            .group_by(STEP_LOGS.c.step)
        ).all()
        found: dict[str, dict[str, Any]] = {}
        for step, attempt in latest:
            where = (
                STEP_LOGS.c.job_id == job_id,
                STEP_LOGS.c.step == step,
                STEP_LOGS.c.attempt == attempt,
            )
            total = conn.scalar(select(func.count()).select_from(STEP_LOGS).where(*where)) or 0
            rows = conn.execute(
                select(STEP_LOGS).where(*where).order_by(STEP_LOGS.c.seq.desc()).limit(per_step)
            ).all()
            found[step] = {
                "attempt": attempt,
                "total": total,
                "lines": [_line(row) for row in reversed(rows)],
            }
    return found
