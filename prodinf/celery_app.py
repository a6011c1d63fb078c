"""The Celery app factory: queues, routes and the settings that make work durable.

``create_celery(settings)`` builds an app whose messages survive a broker
restart (durable queues, persistent messages, publisher confirms) and a worker
dying mid-task (late acks, reject on worker lost, prefetch 1). Messages carry
job ids only; the job store holds the state.

Every queue has a lane (``<queue>.due``) that its workers consume beside it: the
reconciler sends due waits, steps whose worker died and unconfirmed messages
there, so they go out within a message or two of new work however deep the
queue. With ``PRODINF_QUEUE_TYPE=quorum`` every queue is a quorum queue with a
delivery limit; a message delivered that often goes to ``<jobs queue>.dead``,
which the reconciler drains.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery, bootsteps
from celery.signals import celeryd_after_setup
from kombu.entity import Exchange, Queue

from prodinf.config import Settings, get_settings
from prodinf.embedded_broker import TRANSPORT
from prodinf.engine.steplog import tag_log_records
from prodinf.runtime import (
    EMAIL_WHEN_COMPLETE,
    PRIORITY,
    RECONCILE,
    SUBMIT_EVENT,
    dead_letters,
    lane,
    runtime_for,
)
from prodinf.store import workers
from prodinf.store.types import utcnow
from prodinf.task_results import RESULT_TABLES
from prodinf.tasks import ProdinfTask, register_tasks

__all__ = ["EXCHANGE", "create_celery"]

log = logging.getLogger(__name__)

#: The direct exchange every prodinf queue is bound to, by its own name.
EXCHANGE = "prodinf"
#: Celery's formats, with ``job=<id> step=<name>`` on the lines a step's code logs.
WORKER_LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(prodinf_where)s%(message)s"
WORKER_TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: "
    "%(prodinf_where)s%(message)s"
)
#: Deliveries of one message a quorum queue allows before dead-lettering it
#: (RabbitMQ 4's default): a job whose step kills its worker 20 times over.
DELIVERY_LIMIT = 20


def create_celery(settings: Settings | None = None, *, consume: str | None = None) -> Celery:
    """Build a Celery app from ``settings``.

    ``consume`` names a logical queue (``email``, ...) that a worker of this app
    consumes by default when started without ``-Q``.
    """
    settings = settings or get_settings()
    queues = _queues(settings)
    app = Celery("prodinf", set_as_current=False, task_cls=ProdinfTask)
    app.conf.update(
        # Read by ``runtime_for``: each process builds its runtime from these.
        prodinf_settings=settings,
        broker_url=settings.broker,
        broker_transport=TRANSPORT if settings.is_embedded_broker else None,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        result_backend=settings.results_url,
        database_table_names=RESULT_TABLES,
        task_queues=queues,
        task_default_queue=settings.queue_jobs,
        task_default_exchange=EXCHANGE,
        task_default_routing_key=settings.queue_jobs,
        task_routes={
            EMAIL_WHEN_COMPLETE: {
                "queue": settings.queue_email,
                "routing_key": settings.queue_email,
            },
            SUBMIT_EVENT: {"queue": settings.queue_event, "routing_key": settings.queue_event},
        },
        task_create_missing_queues=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_delivery_mode="persistent",
        task_default_priority=PRIORITY,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_publish_retry=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        # A line logged while a step runs names its job and step (steplog.tag_log_records).
        worker_log_format=WORKER_LOG_FORMAT,
        worker_task_log_format=WORKER_TASK_LOG_FORMAT,
        enable_utc=True,
        beat_schedule={
            "prodinf-reconcile": {
                "task": RECONCILE,
                "schedule": settings.scheduler_interval,
                "options": {
                    "queue": lane(settings.queue_jobs),
                    "expires": settings.scheduler_interval,
                },
            }
        },
    )
    register_tasks(app)
    tag_log_records()
    app.steps["worker"].add(WorkerRuntime)
    app.steps["worker"].add(WorkerPresence)
    if settings.worker_reconcile:
        app.steps["worker"].add(WorkerReconciler)
    _consume_lanes(app, settings.queue_for(consume) if consume is not None else None)
    return app


def _queues(settings: Settings) -> list[Queue]:
    """Each queue and its lane, classic or quorum, and the dead letters of quorum ones."""
    exchange = Exchange(EXCHANGE, type="direct", durable=True)
    names = [n for q in dict.fromkeys(settings.queues.values()) for n in (q, lane(q))]
    if settings.queue_type == "classic":
        return [
            Queue(name, exchange, routing_key=name, durable=True, max_priority=PRIORITY)
            for name in names
        ]
    quorum = {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": EXCHANGE,
        "x-dead-letter-routing-key": dead_letters(settings),
    }
    queues = [
        Queue(name, exchange, routing_key=name, durable=True, queue_arguments=quorum)
        for name in names
    ]
    dead = dead_letters(settings)
    return [
        *queues,
        Queue(dead, exchange, routing_key=dead, queue_arguments={"x-queue-type": "quorum"}),
    ]


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.is_embedded_broker:
        root = (settings.home / "broker").resolve()
        for sub in ("queues", "processed", "control"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(root / "queues"),
            "data_folder_out": str(root / "queues"),
            "processed_folder": str(root / "processed"),
            "control_folder": str(root / "control"),
            "store_processed": False,
            "polling_interval": 0.05,
        }
    return {
        "confirm_publish": True,
        "max_retries": 3,
        "interval_start": 0.2,
        "interval_step": 0.5,
        "interval_max": 2,
    }


def _consume_lanes(app: Celery, default: str | None) -> None:
    """Make a worker of ``app`` consume ``default`` (when ``-Q`` did not select queues),
    the lane of each queue it consumes, and never the dead letters."""

    @celeryd_after_setup.connect(weak=False)
    def select_queues(sender: str, instance: Any, **_: Any) -> None:
        if instance.app is not app:
            return
        queues = instance.app.amqp.queues
        # ``consume_from`` lists every queue until one is selected, so ask whether
        # -Q selected any: only then is ``_consume_from`` set.
        if getattr(queues, "_consume_from", None) is not None:
            chosen = list(queues.consume_from)
        elif default is not None:
            chosen = [default]
        else:
            chosen = list(queues)
        dead = dead_letters(app.conf.prodinf_settings)
        wanted = [q for q in chosen if q != dead]
        wanted += [lane(q) for q in wanted if lane(q) in queues]
        queues.select(list(dict.fromkeys(wanted)))


class WorkerRuntime(bootsteps.StartStopStep):  # type: ignore[misc]
    """Builds the worker's runtime as it starts: imports, plugins, rules files checked.

    In the main thread, before the pool forks: built later in a thread of the
    worker, a pool child forked meanwhile would inherit a module import lock held,
    and hang on its first task. A bad rules file stops the worker here.
    """

    label = "prodinf runtime"

    def start(self, worker: Any) -> None:
        runtime_for(worker.app)


class WorkerPresence(bootsteps.StartStopStep):  # type: ignore[misc]
    """Says in the store that this worker is alive (its name and queues), every
    ``SEEN_EVERY`` seconds from a thread, and deletes its row as it stops: what a
    process submitting work reads to warn that no worker uses its store."""

    label = "prodinf presence"
    requires = (WorkerRuntime,)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        queues = list(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        self._thread = threading.Thread(
            target=self._loop,
            args=(worker.app, worker.hostname, queues),
            daemon=True,
            name="prodinf-presence",
        )
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            workers.forget(runtime_for(worker.app).store, worker.hostname)
        except Exception:  # the row ages out of SEEN_WITHIN anyway
            log.warning("could not remove worker %s from the store", worker.hostname)

    def _loop(self, app: Celery, name: str, queues: list[str]) -> None:
        started = utcnow()
        while True:
            try:
                workers.seen(runtime_for(app).store, name, queues, os.getpid(), started)
            except Exception:  # a store outage: say so, and try at the next beat
                log.warning("could not record worker %s in the store", name, exc_info=True)
            if self._stop.wait(workers.SEEN_EVERY):
                return


class WorkerReconciler(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs the reconciler for the worker's own queues in a thread of the worker.

    With it, a worker alone keeps its jobs moving: waits come due and lost
    messages are re-published even when no beat process runs.
    """

    label = "prodinf reconciler"
    requires = (WorkerRuntime,)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        queues = list(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        self._thread = threading.Thread(
            target=self._loop, args=(worker.app, queues), daemon=True, name="prodinf-reconciler"
        )
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self, app: Celery, queues: list[str]) -> None:
        interval = app.conf.prodinf_settings.reconcile_interval
        while not self._stop.wait(interval):
            try:
                runtime_for(app).reconcile(queues)
            except Exception:  # never let the thread die; log and try next time
                log.exception("reconciler pass failed")
