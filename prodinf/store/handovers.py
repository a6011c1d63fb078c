"""Handovers: one unfinished handover per source database, decided by the store; the
copy slots of each staging server, taken in submission order; lists and bulks."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, tuple_, update

from prodinf.status import TERMINAL, StepStatus
from prodinf.store.models import COPY_SLOTS, HANDOVER_BULKS, HANDOVER_OPEN, HANDOVERS, JOBS, STEPS
from prodinf.store.repository import JobStore
from prodinf.store.rows import insert_rows
from prodinf.store.types import insert_if_absent

__all__ = [
    "COPYING",
    "DONE",
    "WAITING",
    "Unfinished",
    "claim_source",
    "free_copy_slot",
    "get_bulk",
    "get_handover",
    "in_flight",
    "insert_bulk",
    "insert_handover",
    "key_of",
    "list_handovers",
    "reset_copy",
    "take_copy_slot",
]

#: Where a handover's copy stands in its staging server's line: in line for a slot,
#: holding one, or copied.
WAITING, COPYING, DONE = "in_line", "copying", "copied"


class Unfinished(Exception):
    """Raised when the source database has an unfinished handover: ``token``, ``stage``."""

    def __init__(self, token: str, stage: str | None) -> None:
        super().__init__(token)
        self.token = token
        self.stage = stage


def key_of(*parts: str) -> str:
    """The sha256 hex of ``parts``: a source database's or a staging server's key."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _stage(conn: Connection, token: str) -> str | None:
    """The stage handover ``token`` is at: its first step that has not succeeded."""
    row = conn.execute(
        select(STEPS.c.name)
        .where(STEPS.c.job_id == token, STEPS.c.status != StepStatus.SUCCEEDED)
        .order_by(STEPS.c.position)
        .limit(1)
    ).first()
    return None if row is None else str(row.name)


def claim_source(conn: Connection, source_key: str, token: str) -> None:
    """Make ``token`` the unfinished handover of the source database ``source_key``.

    Concurrent claims for one database are serialised by the store (the row is
    inserted or locked), so of many at once exactly one succeeds.

    :raises Unfinished: another handover of the database has not ended.
    """
    conn.execute(
        insert_if_absent(conn, HANDOVER_OPEN, "source_key").values(
            source_key=source_key, token=token
        )
    )
    holder = conn.scalar(
        select(HANDOVER_OPEN.c.token)
        .where(HANDOVER_OPEN.c.source_key == source_key)
        .with_for_update()
    )
    if holder is None or holder == token:
        return
    status = conn.scalar(select(JOBS.c.status).where(JOBS.c.id == holder))
    if status is not None and status not in TERMINAL:
        raise Unfinished(str(holder), _stage(conn, str(holder)))
    conn.execute(
        update(HANDOVER_OPEN).where(HANDOVER_OPEN.c.source_key == source_key).values(token=token)
    )


def _lock_slots(conn: Connection, staging_key: str) -> None:
    conn.execute(insert_if_absent(conn, COPY_SLOTS, "staging_key").values(staging_key=staging_key))
    conn.execute(
        select(COPY_SLOTS.c.staging_key)
        .where(COPY_SLOTS.c.staging_key == staging_key)
        .with_for_update()
    )


def _live(staging_key: str, state: str) -> Any:
    """The handovers to ``staging_key`` whose copy is ``state`` and whose job runs."""
    return (
        select(HANDOVERS.c.token, HANDOVERS.c.created_at)
        .select_from(HANDOVERS.join(JOBS, JOBS.c.id == HANDOVERS.c.token))
        .where(
            HANDOVERS.c.staging_key == staging_key,
            HANDOVERS.c.copy_state == state,
            JOBS.c.status.not_in(sorted(TERMINAL)),
        )
    )


def take_copy_slot(conn: Connection, token: str, cap: int, now: datetime) -> tuple[bool, int, int]:
    """Whether handover ``token`` may copy now (a slot of its staging server is free and
    no handover submitted before it waits for one), how many copy, and how many wait
    before it. A handover that may not is marked waiting: a freed slot wakes it."""
    mine = conn.execute(
        select(HANDOVERS.c.staging_key, HANDOVERS.c.copy_state, HANDOVERS.c.created_at).where(
            HANDOVERS.c.token == token
        )
    ).one()
    _lock_slots(conn, mine.staging_key)
    if mine.copy_state == COPYING:
        return True, 0, 0
    if mine.copy_state != WAITING:
        conn.execute(
            update(HANDOVERS)
            .where(HANDOVERS.c.token == token)
            .values(copy_state=WAITING, copy_asked_at=now)
        )
    copying = conn.scalar(
        select(func.count()).select_from(_live(mine.staging_key, COPYING).subquery())
    )
    waiting = _live(mine.staging_key, WAITING).subquery()
    ahead = conn.scalar(
        select(func.count())
        .select_from(waiting)
        .where(tuple_(waiting.c.created_at, waiting.c.token) < tuple_(mine.created_at, token))
    )
    copying, ahead = int(copying or 0), int(ahead or 0)
    if copying + ahead < cap:
        conn.execute(update(HANDOVERS).where(HANDOVERS.c.token == token).values(copy_state=COPYING))
        return True, copying, ahead
    return False, copying, ahead


def free_copy_slot(conn: Connection, token: str, cap: int) -> list[str]:
    """Handover ``token``'s copy is over: the handovers that may now take the freed
    slots (the first waiting, in submission order), for the caller to wake."""
    key = conn.scalar(select(HANDOVERS.c.staging_key).where(HANDOVERS.c.token == token))
    if key is None:
        return []
    _lock_slots(conn, str(key))
    conn.execute(update(HANDOVERS).where(HANDOVERS.c.token == token).values(copy_state=DONE))
    copying = conn.scalar(select(func.count()).select_from(_live(str(key), COPYING).subquery()))
    free = cap - int(copying or 0)
    if free <= 0:
        return []
    waiting = _live(str(key), WAITING).subquery()
    return [
        str(t)
        for t in conn.scalars(
            select(waiting.c.token).order_by(waiting.c.created_at, waiting.c.token).limit(free)
        )
    ]


def reset_copy(conn: Connection, token: str) -> None:
    """Forget where handover ``token``'s copy stood (a restart asks for a slot afresh)."""
    conn.execute(
        update(HANDOVERS)
        .where(HANDOVERS.c.token == token)
        .values(copy_state=None, copy_asked_at=None)
    )


def _columns() -> list[Any]:
    return [
        *HANDOVERS.c,
        JOBS.c.status,
        JOBS.c.progress_message,
        JOBS.c.updated_at,
        JOBS.c.finished_at,
        JOBS.c.error,
    ]


def _shown(row: Any) -> dict[str, Any]:
    found = dict(row._mapping)
    for name in ("created_at", "updated_at", "finished_at", "copy_asked_at"):
        moment = found.get(name)
        found[name] = moment.isoformat() if moment is not None else None
    return found


def get_handover(store: JobStore, token: str) -> dict[str, Any] | None:
    """Handover ``token`` with its job's ``status``, or ``None``."""
    with store.transaction() as conn:
        row = conn.execute(
            select(*_columns())
            .select_from(HANDOVERS.join(JOBS, JOBS.c.id == HANDOVERS.c.token))
            .where(HANDOVERS.c.token == token)
        ).first()
    return None if row is None else _shown(row)


def list_handovers(
    store: JobStore,
    *,
    database: str | None = None,
    type: str | None = None,
    release: int | None = None,
    statuses: list[str] | None = None,
    contact: str | None = None,
    bulk_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Handovers, newest first, filtered; and how many match in all."""
    joined = HANDOVERS.join(JOBS, JOBS.c.id == HANDOVERS.c.token)
    conditions = []
    for column, value in (
        (HANDOVERS.c.database, database),
        (HANDOVERS.c.type, type),
        (HANDOVERS.c.release, release),
        (HANDOVERS.c.contact, contact),
        (HANDOVERS.c.bulk_id, bulk_id),
    ):
        if value is not None:
            conditions.append(column == value)
    if statuses:
        conditions.append(JOBS.c.status.in_(statuses))
    with store.transaction() as conn:
        total = conn.scalar(select(func.count()).select_from(joined).where(*conditions)) or 0
        rows = conn.execute(
            select(*_columns())
            .select_from(joined)
            .where(*conditions)
            .order_by(HANDOVERS.c.created_at.desc(), HANDOVERS.c.token)
            .limit(limit)
            .offset(offset)
        ).all()
    return [_shown(r) for r in rows], int(total)


def in_flight(store: JobStore, source_keys: dict[str, str]) -> dict[str, dict[str, Any]]:
    """For each database name in ``source_keys`` (name -> source key) with an unfinished
    handover: its ``token`` and ``status``."""
    if not source_keys:
        return {}
    names = {key: name for name, key in source_keys.items()}
    with store.transaction() as conn:
        rows = conn.execute(
            select(HANDOVER_OPEN.c.source_key, JOBS.c.id, JOBS.c.status)
            .select_from(HANDOVER_OPEN.join(JOBS, JOBS.c.id == HANDOVER_OPEN.c.token))
            .where(
                HANDOVER_OPEN.c.source_key.in_(list(names)),
                JOBS.c.status.not_in(sorted(TERMINAL)),
            )
        ).all()
    return {names[r.source_key]: {"token": r.id, "status": r.status} for r in rows}


def insert_handover(conn: Connection, row: dict[str, Any]) -> None:
    insert_rows(conn, HANDOVERS, [row])


def insert_bulk(conn: Connection, bulk: dict[str, Any]) -> None:
    insert_rows(conn, HANDOVER_BULKS, [bulk])


def get_bulk(store: JobStore, bulk_id: str) -> dict[str, Any] | None:
    with store.transaction() as conn:
        row = conn.execute(select(HANDOVER_BULKS).where(HANDOVER_BULKS.c.id == bulk_id)).first()
    if row is None:
        return None
    found = dict(row._mapping)
    found["created_at"] = found["created_at"].isoformat()
    return found
