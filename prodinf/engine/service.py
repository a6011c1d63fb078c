"""Submitting, cancelling and retrying jobs: what the API, the web form and the CLI call."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from prodinf.config import Settings
from prodinf.engine.lifecycle import Lifecycle
from prodinf.engine.messages import Messages, Publish, lane
from prodinf.engine.newjob import new_job
from prodinf.engine.notices import parse_notify
from prodinf.engine.registry import Kind, Registry
from prodinf.exceptions import BrokerUnavailable, Conflict, NotFound, ValidationError
from prodinf.limits import MAX_PARAM_TEXT, MAX_PARAMS_BYTES
from prodinf.status import RETRYABLE, TERMINAL, JobStatus
from prodinf.store import JobStore, job_summary
from prodinf.store.children import open_children
from prodinf.store.rows import JobRows
from prodinf.store.submissions import Keyed, delete_job, find_by_key, insert_job
from prodinf.store.types import utcnow

__all__ = ["Jobs", "check_key"]

log = logging.getLogger(__name__)

#: Longest idempotency key and ``submitted_by``: the lengths of their columns.
MAX_KEY_LENGTH = 200
MAX_SUBMITTED_BY = 200
#: Deepest nesting of params, the params object being level 1. MariaDB refuses JSON
#: nested deeper than 31 levels; the limit leaves room for the step outputs and
#: results that carry params one or two levels down.
MAX_PARAMS_DEPTH = 20


class Jobs:
    """The operations on jobs that change them, each one transaction then one message."""

    def __init__(
        self, store: JobStore, registry: Registry, settings: Settings, publish: Publish
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.publish = publish
        self.messages = Messages(store, publish, settings)
        self.lifecycle = Lifecycle(registry, settings)

    def submit(
        self,
        kind: str,
        params: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        submitted_by: str | None = None,
        notify: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Store a new job and publish its message; return (job summary, created).

        ``notify`` (``{"email": [...], "webhook": "https://..."}``) asks for a
        notification when the job ends (see :mod:`prodinf.engine.notices`).

        With an ``idempotency_key`` already used, returns that job and ``False``;
        if that job has not started, its message is sent again (the first request
        may have died between its commit and its publish; a duplicate costs
        nothing). If the broker does not take the message, a new job is removed
        again and ``BrokerUnavailable`` raised: a 2xx means the message was sent.
        Input that some store could not keep exactly (a NUL, a lone surrogate, NaN
        or infinity, params nested too deeply, a ``submitted_by`` too long) raises
        ``ValidationError`` naming the field, the same on every store.
        """
        if not isinstance(kind, str) or not kind:
            raise ValidationError("kind is required", field="kind")
        spec = self.submittable(kind)
        if isinstance(params, dict):  # what the caller sent, named as sent
            _storable(params, "params", MAX_PARAMS_DEPTH, MAX_PARAM_TEXT)
            _not_too_large(params, "params", MAX_PARAMS_BYTES)
        validated = spec.validate(params, self.settings)
        stored_params = validated.model_dump(mode="json")
        _storable(stored_params, "params", MAX_PARAMS_DEPTH)  # and what is written
        flow = spec.flow(validated)
        if idempotency_key is not None:
            check_key(idempotency_key)
        if submitted_by is not None:
            _check_submitted_by(submitted_by)
        if isinstance(notify, dict):
            _storable(notify, "notify", MAX_PARAMS_DEPTH, MAX_PARAM_TEXT)
        stored_notify = parse_notify(notify, self.registry)
        if stored_notify is not None:
            _storable(stored_notify, "notify", MAX_PARAMS_DEPTH)
        existing = None if idempotency_key is None else self._by_key(idempotency_key, kind)
        if existing is not None:
            self._send_again(existing)
            return existing.summary, False
        new = new_job(
            spec,
            stored_params,
            flow,
            self.settings,
            utcnow(),
            idempotency_key=idempotency_key,
            submitted_by=submitted_by,
            notify=stored_notify,
        )
        try:
            insert_job(self.store, new)
        except IntegrityError:
            if idempotency_key is None:
                raise
            # Lost a race for the same key: the winner sends the message.
            existing = self._by_key(idempotency_key, kind)
            if existing is None:
                raise
            return existing.summary, False
        try:
            self.messages.send(new.id, new.queue, new.next_run_at)
        except BrokerUnavailable:
            delete_job(self.store, new.id)
            raise
        return new.summary(), True

    def submittable(self, kind: str) -> Kind[Any]:
        """The kind named ``kind`` if a caller may submit it here: ``UnknownKind`` for no
        such kind, ``ValidationError`` naming ``kind`` for one prodinf makes itself
        (``Kind.internal``: notifications, events' jobs) or one submitted elsewhere."""
        spec = self.registry.get(kind)
        if spec.internal:
            raise ValidationError(
                f"kind {kind!r}: prodinf makes these jobs itself (a notification when a job "
                "with notify ends, an event's job when an event is recorded); they cannot be "
                "submitted",
                field="kind",
            )
        if spec.submitted_at is not None:
            raise ValidationError(
                f"{kind} jobs are submitted with {spec.submitted_at}, which checks them",
                field="kind",
            )
        return spec

    def _by_key(self, key: str, kind: str) -> Keyed | None:
        found = find_by_key(self.store, key)
        if found is not None and found.kind != kind:
            raise Conflict(
                f"idempotency_key {key!r} was used for a {found.kind} job", field="idempotency_key"
            )
        return found

    def _send_again(self, job: Keyed) -> None:
        """Send a replayed key's job again if it has not started: the request that made
        it may have died before its message was sent."""
        if job.summary["status"] == JobStatus.QUEUED:
            self.messages.send(job.summary["id"], job.queue, job.next_run_at)

    def cancel(self, job_id: str, actor: str | None = None) -> dict[str, Any]:
        """Cancel a queued or waiting job now; a running one stops after its current step.
        The jobs its steps started and that still run are cancelled too. ``actor``, who
        asked, is in each history entry this writes."""
        with self.store.transaction() as conn:
            rows = self._locked(conn, job_id)
            if rows.job.status in TERMINAL:
                again = (
                    "" if rows.job.status == JobStatus.SUCCEEDED else "; retry it to run it again"
                )
                raise Conflict(
                    f"job {job_id} has already ended: it is {rows.job.status}{again}", field="id"
                )
            self.lifecycle.cancel(rows, utcnow())
            rows.by(actor)
            rows.save(conn)
            children = open_children(conn, job_id)
        # its notification, and the parent its end woke (if it is a child), on its lane
        self.messages.send_all(
            [(new.id, new.queue, new.next_run_at) for new in rows.spawned]
            + [(parent, lane(queue), None) for parent, queue, _ in rows.woken]
        )
        for child in children:  # each in its own transaction, after the parent's
            with contextlib.suppress(Conflict):  # it ended meanwhile
                self.cancel(child, actor)
        return job_summary(rows.job)

    def retry(self, job_id: str, actor: str | None = None) -> dict[str, Any]:
        """Run a failed, reverted or cancelled job again from where it stopped (``actor``:
        who asked, in the history).

        Steps that succeeded (and were not reverted) keep their outputs and do
        not run again; failed, reverted and cancelled steps start afresh.
        """
        with self.store.transaction() as conn:
            rows = self._locked(conn, job_id)
            if rows.job.status not in RETRYABLE:
                raise Conflict(
                    f"job {job_id} is {rows.job.status}; only a failed, reverted or "
                    "cancelled job can be retried",
                    field="id",
                )
            self.lifecycle.retry(rows, utcnow(), resend_after=self.settings.resend_after)
            rows.by(actor)
            rows.save(conn)
        # If this publish fails the job is queued in the store and the
        # reconciler sends it within resend_after; the caller is told.
        self.messages.send(job_id, rows.job.queue, rows.job.next_run_at)
        return job_summary(rows.job)

    def _locked(self, conn: Connection, job_id: str) -> JobRows:
        rows = JobRows.lock(conn, job_id, self.settings.resend_after)
        if rows is None:
            raise NotFound(f"no job {job_id!r}", field="id")
        return rows


def check_key(key: Any) -> None:
    """Raise ``ValidationError`` unless ``key`` is an idempotency key every store compares exactly.

    Surrounding whitespace is refused: MySQL/MariaDB ignore trailing spaces when
    comparing, so "k " and "k" would be one key there and two elsewhere.
    """
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
        raise ValidationError(
            f"idempotency_key must be a string of 1 to {MAX_KEY_LENGTH} characters",
            field="idempotency_key",
        )
    if key != key.strip():
        raise ValidationError(
            "idempotency_key must not start or end with whitespace", field="idempotency_key"
        )
    _storable(key, "idempotency_key")


def _check_submitted_by(who: Any) -> None:
    """Raise ``ValidationError`` unless ``who`` fits the ``submitted_by`` column on every store."""
    if not isinstance(who, str) or len(who) > MAX_SUBMITTED_BY:
        raise ValidationError(
            f"submitted_by must be a string of at most {MAX_SUBMITTED_BY} characters",
            field="submitted_by",
        )
    _storable(who, "submitted_by")


def _not_too_large(value: Any, field: str, max_bytes: int) -> None:
    """Raise ``ValidationError`` naming ``field`` if ``value``'s JSON exceeds ``max_bytes``."""
    size = len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "replace"))
    if size > max_bytes:
        raise ValidationError(
            f"{field} is too large: {size:,} bytes of JSON, at most {max_bytes:,}", field=field
        )


def _storable(
    value: Any, field: str, max_depth: int | None = None, max_text: int | None = None
) -> None:
    """Raise ``ValidationError`` naming the place in ``value`` no job store can keep as given
    (or, with ``max_text``, that holds a string or key longer than that).

    All three stores must keep a value exactly or refuse it the same way, never
    fail in the driver: PostgreSQL refuses NUL characters in text and JSONB, no
    driver can encode a lone surrogate, JSON has no NaN or infinity (a number
    like 1e999 reads as infinity), and MariaDB refuses deeply nested JSON. Walks
    without recursion, so a deep value cannot exhaust the stack.
    """
    pending: list[tuple[Any, str, int]] = [(value, field, 1)]
    while pending:
        item, where, depth = pending.pop()
        if isinstance(item, str):
            _check_text(item, where, max_text=max_text)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValidationError(
                    f"{where} must be a finite number (JSON has no NaN or infinity)",
                    field=where,
                )
        elif isinstance(item, dict | list | tuple):
            if max_depth is not None and depth > max_depth:
                raise ValidationError(
                    f"{where} nests too deeply (at most {max_depth} levels)", field=where
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str):
                        _check_text(key, where, what="a key", max_text=max_text)
                    pending.append((child, f"{where}.{key}", depth + 1))
            else:
                pending.extend(
                    (child, f"{where}.{index}", depth + 1) for index, child in enumerate(item)
                )


def _check_text(text: str, where: str, *, what: str = "text", max_text: int | None = None) -> None:
    if max_text is not None and len(text) > max_text:
        raise ValidationError(
            f"{where} has {what} of {len(text):,} characters, longer than the {max_text:,} "
            "a param may hold",
            field=where,
        )
    if "\x00" in text:
        raise ValidationError(f"{where} has {what} with a NUL character", field=where)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            f"{where} has {what} with a lone surrogate (not valid Unicode)", field=where
        ) from None
