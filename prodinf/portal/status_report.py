"""The state of a prodinf at a glance: its queues, workers, jobs by status and latest
failures, gathered for ``prodinf status`` (and any page that shows the same).

Queues come from the broker: how many messages wait in each queue and its lane, and
how many consumers it has (RabbitMQ answers a passive ``queue.declare``; the embedded
broker's messages are counted among its files in ``PRODINF_HOME/broker/queues``, and
it knows no consumers). The rest comes from the store: when each queue's oldest
queued job was queued (:func:`prodinf.store.gauges.unfinished`, as ``/metrics`` reads
it), the workers seen in the last minute (``prodinf_workers``), the jobs in each
status, and the jobs that failed last with their error (masked).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kombu.exceptions import KombuError
from kombu.exceptions import OperationalError as KombuOperationalError

from prodinf.embedded_broker import queued_messages
from prodinf.kinds.handover.kind import HANDOVER_KIND
from prodinf.redact import redact_text
from prodinf.runtime import Runtime, lane
from prodinf.status import JobStatus
from prodinf.store import workers
from prodinf.store.failures import latest_failures
from prodinf.store.gauges import unfinished
from prodinf.store.types import utcnow

__all__ = ["FAILURES", "broker_queues", "status_report"]

#: Failed jobs a report lists by default.
FAILURES = 10


def broker_queues(runtime: Runtime, names: list[str]) -> tuple[dict[str, dict[str, Any]], str]:
    """``{name: {"messages": n, "consumers": n}}`` for each queue of ``names`` that the
    broker has (on RabbitMQ, a queue not declared yet is left out; consumers are
    ``None`` on the embedded broker, which does not know them), and an error saying
    why the broker could not be asked ("" when it could)."""
    found: dict[str, dict[str, Any]] = {}
    if runtime.settings.is_embedded_broker:
        folder = runtime.celery.conf.broker_transport_options["data_folder_in"]
        try:
            counted = queued_messages(folder, names)
        except OSError as exc:
            return found, f"cannot read the embedded broker's folder {folder}: {exc.strerror}"
        return {n: {"messages": c, "consumers": None} for n, c in counted.items()}, ""
    try:
        with runtime.celery.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
            for name in names:
                # A passive declare of a missing queue closes its channel: one each.
                channel = conn.channel()
                try:
                    _, messages, consumers = channel.queue_declare(queue=name, passive=True)
                except conn.channel_errors:
                    continue
                finally:
                    try:
                        channel.close()
                    except (*conn.channel_errors, *conn.connection_errors):
                        pass
                found[name] = {"messages": messages, "consumers": consumers}
    except (KombuError, KombuOperationalError, OSError) as exc:
        return found, f"broker unavailable ({redact_text(runtime.settings.broker)}): {exc}"
    return found, ""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _ago(value: datetime | None, now: datetime) -> float | None:
    return None if value is None else max(0.0, (now - value).total_seconds())


def status_report(
    runtime: Runtime, *, failures: int = FAILURES, count_limit: int | None = None
) -> dict[str, Any]:
    """What ``prodinf status`` shows, as JSON-ready data::

        {"at": ISO time,
         "broker": {"url": masked URL, "error": "" or why it could not be asked},
         "queues": [{"queue", "name", "messages", "lane_messages", "consumers",
                     "workers", "oldest_queued_at", "oldest_queued_seconds"}, ...],
         "workers": [{"name", "queues", "pid", "started_at", "seen_at",
                      "seen_seconds_ago"}, ...],
         "counts": {status: number of jobs, for every status (with count_limit,
                    each counted up to count_limit + 1: "more than count_limit")},
         "failures": [{"id", "kind", "queue", "finished_at", "step", "error"}, ...]}

    A queue's ``messages`` and ``consumers`` are ``None`` when the broker could not say
    (not declared yet, the broker down; consumers on the embedded broker); ``workers``
    counts the workers seen in the last minute that consume it.

    :raises ProdinfError: when the store cannot be read.
    """
    settings = runtime.settings
    store = runtime.store
    now = utcnow()
    queues = list(dict.fromkeys(settings.queues.values()))
    on_broker, broker_error = broker_queues(runtime, [n for q in queues for n in (q, lane(q))])
    seen = workers.recent(store)
    since = unfinished(store, handover_kind=HANDOVER_KIND).oldest_queued
    counted = store.counts(limit=count_limit)
    rows = []
    for logical, name in settings.queues.items():
        main, its_lane = on_broker.get(name, {}), on_broker.get(lane(name), {})
        rows.append(
            {
                "queue": logical,
                "name": name,
                "messages": main.get("messages"),
                "lane_messages": its_lane.get("messages"),
                "consumers": main.get("consumers"),
                "workers": sum(1 for w in seen if name in w.queues),
                "oldest_queued_at": _iso(since.get(name)),
                "oldest_queued_seconds": _ago(since.get(name), now),
            }
        )
    return {
        "at": now.isoformat(),
        "broker": {"url": redact_text(settings.broker), "error": broker_error},
        "queues": rows,
        "workers": [
            {
                "name": w.name,
                "queues": w.queues,
                "pid": w.pid,
                "started_at": _iso(w.started_at),
                "seen_at": _iso(w.seen_at),
                "seen_seconds_ago": _ago(w.seen_at, now),
            }
            for w in seen
        ],
        "counts": {status.value: counted.get(status, 0) for status in JobStatus},
        "failures": [
            {**f, "finished_at": _iso(f["finished_at"])} for f in latest_failures(store, failures)
        ],
    }
