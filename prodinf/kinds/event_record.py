"""Recording an event: the event, the ``event`` job that handles it and (when they
can all start at once) its processes, in one transaction, then their messages.

``record_event`` stores an event (type, dataset and what the naming rules read in it,
payload, source, idempotency key) and its job; ``preview_event`` answers what it would
start and stores nothing (the dry run); ``recorded_with_step`` records events in the
transaction that finishes a step (``register_metadata``'s).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from prodinf.config import Settings
from prodinf.databases.naming import load_naming_rules
from prodinf.engine.messages import Messages, Publish
from prodinf.engine.newjob import done_already, new_job, waiting_on
from prodinf.engine.registry import Registry
from prodinf.engine.service import check_key
from prodinf.exceptions import BrokerUnavailable, ProdinfError, ValidationError
from prodinf.kinds.event import EventParams, Process, succeeded_output
from prodinf.kinds.subscriptions import Match, load_subscriptions
from prodinf.status import JobStatus
from prodinf.store import JobStore
from prodinf.store.children import LAST, WAKE, child_key
from prodinf.store.events import (
    WindowTaken,
    claim_window,
    delete_event,
    event_by_key,
    event_exists,
    event_job,
    insert_event,
)
from prodinf.store.rows import NewRows
from prodinf.store.submissions import delete_job
from prodinf.store.types import utcnow

__all__ = [
    "MAX_DATASET",
    "MAX_SOURCE",
    "MAX_TYPE",
    "preview_event",
    "record_event",
    "recorded_with_step",
]

#: Longest event type, dataset name and source: the lengths of their columns.
MAX_TYPE, MAX_DATASET, MAX_SOURCE = 100, 200, 200


def preview_event(
    settings: Settings, registry: Registry, document: dict[str, Any]
) -> tuple[dict[str, Any], list[Match]]:
    """The event ``document`` describes, checked, and the processes it would start, their
    params rendered and validated (what ``dry_run`` answers). Stores nothing."""
    event = _checked(settings, document)
    matches = load_subscriptions(settings.subscriptions).matching(
        {**event, "dataset": _dataset_view(event)}
    )
    for match in matches:
        if match.error is not None or match.params is None:
            continue
        try:
            spec = registry.get(match.kind)
            match.params = spec.validate(match.params).model_dump(mode="json")
        except ProdinfError as exc:
            match.params, match.error = None, exc.message
    return event, matches


def record_event(
    store: JobStore,
    registry: Registry,
    settings: Settings,
    publish: Publish,
    document: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    """Record the event ``document`` describes and send its job; return (the event with
    its ``processes``, created). A repeated idempotency key returns the first event.

    :raises ValidationError: a field is missing or wrong (the message names it).
    :raises BrokerUnavailable: the job's message could not be sent; nothing is kept.
    """
    key = document.get("idempotency_key")
    if key is not None:
        found = event_by_key(store, key) if isinstance(key, str) else None
        if found is not None:
            return found, False
    event, matches = preview_event(settings, registry, document)
    now = utcnow()
    job, children = _event_job(registry, settings, event, matches, now)
    stored = job.values["params"]["processes"]
    for attempt in range(1, 6):
        try:
            with store.transaction() as conn:
                _write(conn, event, job, children, now)
            break
        except (IntegrityError, WindowTaken):
            found = event_by_key(store, key) if key is not None else None
            if found is not None:
                return found, False
            if attempt == 5 or not any(p["coalesce_key"] for p in stored):
                raise
    messages = Messages(store, publish, settings)
    try:
        for sent in _to_send(job, children):
            messages.send(sent.id, sent.queue, sent.next_run_at)
    except BrokerUnavailable:
        for made in (*children, job):
            delete_job(store, made.id)
        delete_event(store, event["id"])  # nothing handles it
        raise
    shown = {
        **event,
        "created_at": now.isoformat(),
        "job_id": job.id,
        "status": job.values["status"],
        "processes": stored,
    }
    return shown, True


def recorded_with_step(
    registry: Registry, settings: Settings, documents: list[dict[str, Any]]
) -> tuple[list[str], Callable[[Connection, datetime], list[NewRows]]]:
    """For a step that records events with its success (return ``Commit(output,
    write)``): the ids of the events ``documents`` describe, and the ``write`` that
    records them and their jobs in the transaction that finishes the step, so they
    are there exactly when the step is done (never lost, never twice).

    Each document needs an ``idempotency_key`` (from the job and step): the event's id
    is made from it, and an event an earlier run of the step recorded is not
    recorded again.

    :raises ValidationError: a document is wrong (the message names the field).
    """
    previewed = [preview_event(settings, registry, document) for document in documents]
    for event, _ in previewed:  # the same ids each time the step runs
        event["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"prodinf:{event['idempotency_key']}"))

    def write(conn: Connection, now: datetime) -> list[NewRows]:
        jobs = []
        for event, matches in previewed:
            if event_exists(conn, event["id"]):  # an earlier run of the step recorded it
                continue
            job, children = _event_job(registry, settings, event, matches, now)
            # a job waiting for its processes, or done, needs no message: inserted
            # here, and its processes by the caller with the step's record (sent after
            # the commit); a queued job is inserted and sent by the caller
            queued = job.values["status"] == JobStatus.QUEUED
            _write(conn, event, job, [], now, insert_job=not queued)
            jobs.extend(_to_send(job, children))
        return jobs

    return [event["id"] for event, _ in previewed], write


def _event_job(
    registry: Registry,
    settings: Settings,
    event: dict[str, Any],
    matches: list[Match],
    now: datetime,
) -> tuple[NewRows, list[NewRows]]:
    """The rows of the ``event`` job that handles ``event``, its processes snapshotted,
    and the processes started with it.

    When every process can start at once (none comes ``after`` another, coalesces, or
    failed to render), they are started as the event is recorded, in its transaction,
    and the job starts out waiting for the last of them to end: what its first run
    would do, without that run or its message.
    """
    processes = [Process(**m.model_dump()) for m in matches]
    params = EventParams(event_id=event["id"], processes=processes)
    spec = registry.get("event")
    job = new_job(
        spec,
        params.model_dump(mode="json"),
        spec.flow(params),
        settings,
        now,
        submitted_by=event["source"],
    )
    if not processes:  # nothing to do: it is done, and needs no run
        done_already(job, succeeded_output({}), now)
        return job, []
    if any(p.error is not None or p.after or p.coalesce_key is not None for p in processes):
        return job, []
    step = job.steps[0]["name"]
    children = {}
    for proc in processes:
        kind = registry.get(proc.kind)
        valid = kind.validate(proc.params or {})
        children[proc.subscription] = new_job(
            kind,
            valid.model_dump(mode="json"),
            kind.flow(valid),
            settings,
            now,
            idempotency_key=child_key(job.id, step, proc.subscription),
            submitted_by=f"job {job.id}",
            parent=(job.id, step),
            queue=proc.queue,
        )
    waiting_on(
        job,
        children,
        reason=f"waiting for {', '.join(sorted(children))}",
        until=now + timedelta(days=7),
        state={"round": 1, WAKE: LAST},
    )
    return job, list(children.values())


def _to_send(job: NewRows, children: list[NewRows]) -> list[NewRows]:
    """The jobs whose messages a new event needs: its processes started with it, or its
    job if it is queued (not if it is done already)."""
    return children or ([job] if job.values["status"] == JobStatus.QUEUED else [])


def _write(
    conn: Connection,
    event: dict[str, Any],
    job: NewRows,
    children: list[NewRows],
    now: datetime,
    *,
    insert_job: bool = True,
) -> None:
    """Open or join each process's coalescing window, then insert the event (and its
    job and the processes started with it, unless the caller inserts the job), in one
    transaction."""
    for proc in job.values["params"]["processes"]:
        if proc["coalesce_key"] is None or proc["error"] is not None:
            continue
        owner, closes = claim_window(
            conn, proc["subscription"], proc["coalesce_key"], event["id"], now, proc["window"]
        )
        if owner == event["id"]:
            proc["start_at"] = closes.isoformat()
        else:
            proc["coalesced_into"] = {"event": owner, "job": event_job(conn, owner)}
    insert_event(conn, {**event, "created_at": now}, job, insert_job=insert_job)
    if insert_job:
        for child in children:
            child.insert(conn)


def _checked(settings: Settings, document: Any) -> dict[str, Any]:
    """The event's row values from a submitted document; ``ValidationError`` names the field."""
    if not isinstance(document, dict):
        raise ValidationError("the body must be a JSON object", field="body")
    unknown = sorted(set(document) - {"type", "dataset", "payload", "source", "idempotency_key"})
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    kind = document.get("type")
    if not isinstance(kind, str) or not 0 < len(kind.strip()) <= MAX_TYPE or kind != kind.strip():
        raise ValidationError(
            f"type must be an event type of 1 to {MAX_TYPE} characters", field="type"
        )
    dataset = document.get("dataset")
    if dataset is not None and (
        not isinstance(dataset, str) or not 0 < len(dataset) <= MAX_DATASET
    ):
        raise ValidationError(
            f"dataset must be a database name of 1 to {MAX_DATASET} characters", field="dataset"
        )
    payload = document.get("payload", {})
    if not isinstance(payload, dict):
        raise ValidationError("payload must be a JSON object", field="payload")
    source = document.get("source")
    if source is not None and (not isinstance(source, str) or len(source) > MAX_SOURCE):
        raise ValidationError(f"source must be at most {MAX_SOURCE} characters", field="source")
    for name in ("type", "dataset", "source"):  # no store keeps a NUL, dry run or not
        if "\x00" in (document.get(name) or ""):
            raise ValidationError(f"{name} has a NUL character", field=name)
    key = document.get("idempotency_key")
    if key is not None:
        check_key(key)
    attributes = None
    if dataset is not None:
        found = load_naming_rules(settings.naming_rules).match(dataset)
        attributes = found.as_dict() if found is not None else None
    return {
        "id": str(uuid.uuid4()),
        "type": kind,
        "dataset": dataset,
        "attributes": attributes,
        "payload": payload,
        "source": source,
        "idempotency_key": key,
    }


def _dataset_view(event: dict[str, Any]) -> dict[str, Any] | None:
    """What templates and ``where`` see as ``dataset``: its name and attributes."""
    if event["dataset"] is None:
        return None
    return {**(event["attributes"] or {}), "name": event["dataset"]}
