"""The job store's tables: jobs, their steps, an append-only history, and URL watches."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from prodinf.status import StepStatus
from prodinf.store.types import JSONType, UTCDateTime, utcnow

__all__ = [
    "COALESCING",
    "COPY_SLOTS",
    "EVENTS",
    "HANDOVERS",
    "HANDOVER_BULKS",
    "HANDOVER_OPEN",
    "HISTORY",
    "JOBS",
    "STEPS",
    "TOKENS",
    "USERS",
    "WATCHERS",
    "WATCHES",
    "WORKERS",
    "Base",
    "EventRow",
    "HistoryRow",
    "JobRow",
    "StepRow",
    "WatchRow",
    "WatcherRow",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


#: Idempotency keys compare byte for byte: MySQL/MariaDB's default collation would
#: make "Key" equal "key" and "kéy" equal "key" (migration 0002). Its PAD SPACE
#: comparison still ignores trailing spaces, so the service refuses keys with
#: surrounding whitespace.
_EXACT_KEY = String(200).with_variant(
    mysql.VARCHAR(200, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class JobRow(Base):
    """One submitted piece of work. This row, not any broker message, is the truth."""

    __tablename__ = "prodinf_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(100))
    queue: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    result: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    progress_message: Mapped[str | None] = mapped_column(String(500), nullable=True)
    submitted_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(_EXACT_KEY, nullable=True, unique=True)
    notify: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: When the reconciler should next publish a message for this job.
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The job whose step started this one (``parent_step``); its end wakes that step.
    parent_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    parent_step: Mapped[str | None] = mapped_column(String(100), nullable=True)

    __table_args__ = (
        Index("ix_prodinf_jobs_status_next_run_at", "status", "next_run_at"),
        # a page of the list, read from an index however deep (migration 0014)
        Index("ix_prodinf_jobs_created_at", "created_at", "id"),
        Index("ix_prodinf_jobs_kind_created_at", "kind", "created_at", "id"),
        Index("ix_prodinf_jobs_status_created_at", "status", "created_at", "id"),
        Index("ix_prodinf_jobs_updated_at", "updated_at", "id"),
        Index("ix_prodinf_jobs_parent_id", "parent_id", "parent_step"),
        # the latest failures, and what ended in the last hour (migration 0013)
        Index("ix_prodinf_jobs_status_finished_at", "status", "finished_at"),
    )


class StepRow(Base):
    """One step of a job's flow, with its attempts, output, lease and wait."""

    __tablename__ = "prodinf_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("prodinf_jobs.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer)
    after: Mapped[list[str]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(20), default=StepStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    output: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    #: State a step keeps between executions: recorded side effects, wait data.
    state: Mapped[dict[str, Any]] = mapped_column(JSONType)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    wait_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_prodinf_steps_job_id_name"),)


class HistoryRow(Base):
    """An append-only event in a job's life: submitted, step started, retried, ..."""

    __tablename__ = "prodinf_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("prodinf_jobs.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    event: Mapped[str] = mapped_column(String(50))
    step: Mapped[str | None] = mapped_column(String(100), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class WatchRow(Base):
    """A URL looked at on behalf of every step waiting for it to finish.

    However many jobs wait on one URL, it is fetched once per ``interval``
    (the shortest any of them asked for) by whichever reconciler claims it.
    """

    __tablename__ = "prodinf_watches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: SHA-256 of ``url``: a unique key every database can index.
    url_key: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(Text)
    interval: Mapped[float] = mapped_column(Float)
    next_look_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    #: Failed looks in a row (errors, 404, not JSON).
    errors: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WatcherRow(Base):
    """A waiting step that a watch wakes when its URL finishes or keeps failing."""

    __tablename__ = "prodinf_watchers"

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("prodinf_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[str] = mapped_column(String(100), primary_key=True)
    watch_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("prodinf_watches.id", ondelete="CASCADE"), index=True
    )
    #: Wake the step (as failed) once the URL has failed this many looks in a row.
    max_errors: Mapped[int] = mapped_column(Integer)


class EventRow(Base):
    """Something that happened to a dataset (append-only), handled by the job ``job_id``."""

    __tablename__ = "prodinf_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(100), index=True)
    dataset: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    #: What the naming rules read in ``dataset``: type, release, assembly, ...
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    source: Mapped[str | None] = mapped_column(String(200), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(_EXACT_KEY, nullable=True, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)


class CoalescingRow(Base):
    """The open coalescing window of one subscription and key: events recorded before
    ``closes_at`` point at the process of ``event_id``, which starts then."""

    __tablename__ = "prodinf_coalescing"

    #: sha256 hex of the subscription and the rendered key.
    slot: Mapped[str] = mapped_column(String(64), primary_key=True)
    subscription: Mapped[str] = mapped_column(String(60))
    key: Mapped[str] = mapped_column(String(500))
    event_id: Mapped[str] = mapped_column(String(36))
    closes_at: Mapped[datetime] = mapped_column(UTCDateTime)


class HandoverRow(Base):
    """A handover: the ``handover`` job ``token`` and what its checks found, for lists
    and filters; ``copy_state`` is where its copy stands in the queue of its staging
    server (``waiting``, ``copying``, ``done``)."""

    __tablename__ = "prodinf_handovers"

    token: Mapped[str] = mapped_column(String(36), primary_key=True)
    #: sha256 hex of the source server and database: one unfinished handover each.
    source_key: Mapped[str] = mapped_column(String(64), index=True)
    server: Mapped[str] = mapped_column(String(300))
    database: Mapped[str] = mapped_column(String(200), index=True)
    dataset: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(60), index=True)
    release: Mapped[int] = mapped_column(Integer, index=True)
    staging: Mapped[str] = mapped_column(String(300))
    #: sha256 hex of the staging server: the copies capped together.
    staging_key: Mapped[str] = mapped_column(String(64), index=True)
    contact: Mapped[str] = mapped_column(String(320), index=True)
    bulk_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    copy_state: Mapped[str | None] = mapped_column(String(10), nullable=True)
    copy_asked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class HandoverOpenRow(Base):
    """The unfinished handover of each source database: the store refuses a second."""

    __tablename__ = "prodinf_handover_open"

    source_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[str] = mapped_column(String(36))


class HandoverBulkRow(Base):
    """A bulk handover: what was asked, and the answer for each database."""

    __tablename__ = "prodinf_handover_bulks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    server: Mapped[str] = mapped_column(String(300))
    contact: Mapped[str] = mapped_column(String(320))
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    answers: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class CopySlotRow(Base):
    """One row per staging server, locked while a handover takes or frees a copy slot."""

    __tablename__ = "prodinf_copy_slots"

    staging_key: Mapped[str] = mapped_column(String(64), primary_key=True)


class WorkerRow(Base):
    """A worker that uses this store: the queues it consumes and when it was last seen
    (every ``SEEN_EVERY`` seconds while it runs; its row is deleted as it stops)."""

    __tablename__ = "prodinf_workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    queues: Mapped[list[str]] = mapped_column(JSONType)
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UserRow(Base):
    """Someone who may use the portal and the API, with one role (``store.users.ROLES``)."""

    __tablename__ = "prodinf_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    #: argon2id; ``None``: no password (the user only has tokens).
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TokenRow(Base):
    """An API token: its visible id, the SHA-256 of the whole token (never the token),
    its user, and whether it is read-only, until when it holds, and if it was revoked."""

    __tablename__ = "prodinf_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("prodinf_users.id", ondelete="CASCADE"), index=True
    )
    digest: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(String(200), nullable=True)
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# The tables, for Core statements (the runner's hot path uses no ORM session).
JOBS = cast(Table, JobRow.__table__)
STEPS = cast(Table, StepRow.__table__)
HISTORY = cast(Table, HistoryRow.__table__)
WATCHES = cast(Table, WatchRow.__table__)
WATCHERS = cast(Table, WatcherRow.__table__)
EVENTS = cast(Table, EventRow.__table__)
COALESCING = cast(Table, CoalescingRow.__table__)
HANDOVERS = cast(Table, HandoverRow.__table__)
HANDOVER_OPEN = cast(Table, HandoverOpenRow.__table__)
HANDOVER_BULKS = cast(Table, HandoverBulkRow.__table__)
COPY_SLOTS = cast(Table, CopySlotRow.__table__)
WORKERS = cast(Table, WorkerRow.__table__)
USERS = cast(Table, UserRow.__table__)
TOKENS = cast(Table, TokenRow.__table__)
