"""``GET /metrics``: Prometheus' text format (or OpenMetrics, if asked).

Three sources, read at each scrape:

- the counts the engine keeps (:mod:`prodinf.metrics`): this process's, or every
  process's of the folder they share (gunicorn's workers, ``prodinf up``'s workers);
- the store: the jobs not yet over by kind and status, the oldest queued job of each
  queue, the waiting steps, the handovers by stage, the workers alive on each queue
  (:mod:`prodinf.store.gauges`, :mod:`prodinf.store.workers`);
- the broker: the messages waiting on each queue, and (RabbitMQ) its consumers.

A store or broker that does not answer leaves its gauges out and says so
(``prodinf_store_up``, ``prodinf_broker_up``): the scrape itself still answers.
docs/metrics.rst lists every metric.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from flask import Response, request
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from prodinf import metrics
from prodinf.embedded_broker import queued_messages
from prodinf.kinds.handover.kind import HANDOVER_KIND
from prodinf.portal.current import runtime
from prodinf.runtime import Runtime, logical_queues
from prodinf.status import ACTIVE
from prodinf.store import workers
from prodinf.store.gauges import unfinished
from prodinf.store.types import utcnow

__all__ = ["scrape"]

log = logging.getLogger(__name__)

#: Seconds the broker may take to accept a connection for a scrape.
BROKER_TIMEOUT = 3.0


def scrape() -> Response:
    """The metrics, in the format the scraper's ``Accept`` asks for."""
    rt = runtime()
    registry = CollectorRegistry(auto_describe=False)
    for source in (metrics.Counts(), _Store(rt), _Broker(rt)):
        registry.register(source)
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), content_type=content_type)


def _up(name: str, what: str, up: bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, f"1 if the {what} answered this scrape, else 0", value=int(up))


class _Store(Collector):
    """The work not yet over, and the workers alive, as the store has them."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        settings, store = self.rt.settings, self.rt.store
        try:
            found = unfinished(store, handover_kind=HANDOVER_KIND)
            alive = workers.recent(store)
        except Exception as exc:  # a store down: its gauges are left out, not made up
            log.warning("metrics: the store did not answer: %s", exc)
            yield _up("prodinf_store_up", "job store", False)
            return
        yield _up("prodinf_store_up", "job store", True)

        jobs = GaugeMetricFamily(
            "prodinf_jobs_active",
            "Jobs not yet over (queued, running, waiting), by kind and status",
            labels=["kind", "status"],
        )
        kinds = {name for name, _ in found.jobs} | {k.name for k in self.rt.registry.all()}
        for kind in sorted(kinds):
            for status in sorted(ACTIVE):
                jobs.add_metric([kind, status], found.jobs.get((kind, status), 0))
        yield jobs

        now = utcnow()
        oldest = GaugeMetricFamily(
            "prodinf_oldest_queued_job_age_seconds",
            "Seconds the oldest job still queued on each queue has waited (0: none waits)",
            labels=["queue"],
        )
        for queue in sorted(set(settings.queues.values()) | set(found.oldest_queued)):
            since = found.oldest_queued.get(queue)
            age = 0.0 if since is None else max(0.0, (now - since).total_seconds())
            oldest.add_metric([queue], age)
        yield oldest

        waits = GaugeMetricFamily(
            "prodinf_waits_pending",
            "Steps waiting, holding no worker (a timer, a URL, a child or remote job, a "
            "retry), by kind",
            labels=["kind"],
        )
        for kind, count in sorted(found.waits.items()):
            waits.add_metric([kind], count)
        yield waits

        stages = GaugeMetricFamily(
            "prodinf_handovers_in_flight",
            "Handovers not yet over, by stage (their first step not succeeded)",
            labels=["stage"],
        )
        for stage, count in sorted(found.stages.items()):
            stages.add_metric([stage], count)
        yield stages

        per_queue = dict.fromkeys(settings.queues.values(), 0)
        for worker in alive:
            for queue in logical_queues(worker.queues):
                per_queue[queue] = per_queue.get(queue, 0) + 1
        live = GaugeMetricFamily(
            "prodinf_workers_alive",
            f"Workers that said they were alive in the last {workers.SEEN_WITHIN:.0f} s, by "
            "queue they consume",
            labels=["queue"],
        )
        for queue, count in sorted(per_queue.items()):
            live.add_metric([queue], count)
        yield live


class _Broker(Collector):
    """The messages waiting on each queue (and its consumers, on RabbitMQ)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        conf = self.rt.celery.conf
        names = [q.name for q in conf.task_queues]
        try:
            if self.rt.settings.is_embedded_broker:
                depth = queued_messages(conf.broker_transport_options["data_folder_in"], names)
                consumers: dict[str, int] | None = None
            else:
                depth, consumers = self._rabbitmq(names)
        except Exception as exc:  # a broker down: its gauges are left out
            log.warning("metrics: the broker did not answer: %s", exc)
            yield _up("prodinf_broker_up", "broker", False)
            return
        yield _up("prodinf_broker_up", "broker", True)
        messages = GaugeMetricFamily(
            "prodinf_queue_messages",
            "Messages waiting on each broker queue (a queue's lane is <queue>.due)",
            labels=["queue"],
        )
        for name, count in sorted(depth.items()):
            messages.add_metric([name], count)
        yield messages
        if consumers is not None:
            held = GaugeMetricFamily(
                "prodinf_queue_consumers",
                "Consumers of each broker queue (RabbitMQ): a worker is one, whatever its "
                "concurrency",
                labels=["queue"],
            )
            for name, count in sorted(consumers.items()):
                held.add_metric([name], count)
            yield held

    def _rabbitmq(self, names: list[str]) -> tuple[dict[str, int], dict[str, int]]:
        """Each queue's messages and consumers, asked with a passive declare (a queue
        not declared yet holds none and has none)."""
        depth, consumers = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
        with self.rt.celery.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)
            for name in names:
                channel: Any = conn.channel()
                try:
                    ok = channel.queue_declare(queue=name, passive=True)
                except conn.channel_errors:  # not found: the broker closes the channel
                    continue
                depth[name], consumers[name] = ok.message_count, ok.consumer_count
                channel.close()
        return depth, consumers
