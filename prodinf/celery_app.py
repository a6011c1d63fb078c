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
import warnings
from typing import Any

from celery import Celery, bootsteps
from celery.app.log import Logging
from celery.apps import worker as celery_worker
from celery.apps.beat import Beat
from celery.signals import celeryd_after_setup
from celery.utils.log import ColorFormatter
from celery.worker import state as worker_state
from kombu.entity import Exchange, Queue
from prometheus_client import CollectorRegistry, start_http_server

from prodinf import metrics
from prodinf.config import Settings, get_settings
from prodinf.databases.uri import load_drivers
from prodinf.embedded_broker import TRANSPORT
from prodinf.engine.logformat import formatter_for
from prodinf.engine.steplog import tag_log_records
from prodinf.files import private_folder
from prodinf.forks import no_fork
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
from prodinf.task_results import RESULT_TABLES, engine_options
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
    app = Celery("prodinf", set_as_current=False, task_cls=ProdinfTask, log=ProdinfLogging)
    app.conf.update(
        # Read by ``runtime_for``: each process builds its runtime from these.
        prodinf_settings=settings,
        broker_url=settings.broker,
        broker_transport=TRANSPORT if settings.is_embedded_broker else None,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        result_backend=settings.results_url,
        database_table_names=RESULT_TABLES,
        database_engine_options=engine_options(settings.results_url),
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
    if settings.log_format == "json":
        # What Celery prints rather than logs would be lines that are not JSON.
        app.Worker = app.subclass_with_self(QuietWorker)
        app.Beat = app.subclass_with_self(QuietBeat)
    app.steps["worker"].add(WorkerRuntime)
    app.steps["worker"].add(WorkerPresence)
    app.steps["worker"].add(WorkerMetrics)
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
        private_folder(settings.home)
        root = private_folder(settings.home.resolve() / "broker")
        for sub in ("queues", "processed", "control"):
            private_folder(root / sub)
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


class ProdinfLogging(Logging):  # type: ignore[misc]
    """Celery's logging setup, writing ``PRODINF_LOG_FORMAT`` lines, credentials masked.

    Every handler Celery sets up (on the root, task and multiprocessing loggers of a
    worker, which its pool children inherit, and of beat) gets prodinf's formatter:
    with ``text``, Celery's own lines masked; with ``json``, one object a line.
    """

    def setup_handlers(
        self,
        logger: logging.Logger,
        logfile: Any,
        format: str,
        colorize: bool,
        formatter: type[logging.Formatter] = ColorFormatter,
        **kwargs: Any,
    ) -> logging.Logger:
        before = set(logger.handlers)
        super().setup_handlers(logger, logfile, format, colorize, formatter=formatter, **kwargs)
        log_format = self.app.conf.prodinf_settings.log_format
        for handler in logger.handlers:
            if handler not in before:
                handler.setFormatter(formatter_for(log_format, handler.formatter))
        return logger


def _say_as_log(msg: str, f: Any = None) -> None:
    """Celery's ``safe_say`` (its shutdown notices, written to stdout from a signal
    handler), as a log line."""
    logging.getLogger("celery.apps.worker").warning("%s", msg)


class QuietWorker(celery_worker.Worker):  # type: ignore[misc]
    """A worker that logs what Celery would print (its banner is left out, and its
    shutdown notices are logged): the worker of ``PRODINF_LOG_FORMAT=json``."""

    def on_before_init(self, quiet: bool = False, **kwargs: Any) -> None:
        # Its warnings (running as root, ...) come before logging is set up: kept, and
        # shown once it is.
        with warnings.catch_warnings(record=True) as early:
            super().on_before_init(quiet=True, **kwargs)
        self._early_warnings = early

    def on_init_blueprint(self) -> None:
        super().on_init_blueprint()  # sets up logging, warnings captured as log records
        for early in self._early_warnings:
            warnings.showwarning(early.message, early.category, early.filename, early.lineno)

    def on_start(self) -> None:
        super().on_start()
        logging.getLogger("celery.apps.worker").info(
            "%s started: queues %s, concurrency %s",
            self.hostname,
            ", ".join(self.app.amqp.queues.consume_from or ()),
            self.concurrency,
        )

    def install_platform_tweaks(self, worker: Any) -> None:
        super().install_platform_tweaks(worker)
        # The signal handlers installed here find safe_say in their module when a
        # signal comes: only a worker process of this app runs them.
        celery_worker.safe_say = _say_as_log


class QuietBeat(Beat):  # type: ignore[misc]
    """Beat without its banner (which it prints): the scheduler of
    ``PRODINF_LOG_FORMAT=json``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["quiet"] = True
        super().__init__(*args, **kwargs)


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
    """Builds the worker's runtime as it starts: imports (the database drivers too,
    so no job pays for them), plugins, rules files checked.

    In the main thread, before the pool forks: built later in a thread of the
    worker, a pool child forked meanwhile would inherit a module import lock held,
    and hang on its first task. A bad rules file stops the worker here.
    """

    label = "prodinf runtime"

    def start(self, worker: Any) -> None:
        runtime_for(worker.app)
        load_drivers()


class _ThreadStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """A worker step that makes a pass (``one_pass(app, name, queues)``; ``name``: the
    worker's node name; ``queues``: those it consumes) in a thread of the worker every
    ``every(app)`` seconds, the first at once if ``first_at_once``, from its start until
    it stops.

    Each pass runs in :func:`~prodinf.forks.no_fork`: the pool forks no process while
    a pass is under way, so none inherits what the pass held at that instant (a pool
    process forked as the presence thread opened its store connection hung on the
    first task it took).
    """

    requires = (WorkerRuntime,)
    thread_name = "prodinf-step"
    first_at_once = False

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        queues = list(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        self._thread = threading.Thread(
            target=self._run,
            args=(worker.app, worker.hostname, queues),
            daemon=True,
            name=self.thread_name,
        )
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, app: Celery, name: str, queues: list[str]) -> None:
        wait = 0.0 if self.first_at_once else self.every(app)
        while not self._stop.wait(wait):
            with no_fork():
                self.one_pass(app, name, queues)
            wait = self.every(app)

    def every(self, app: Celery) -> float:
        raise NotImplementedError

    def one_pass(self, app: Celery, name: str, queues: list[str]) -> None:
        raise NotImplementedError


class WorkerPresence(_ThreadStep):
    """Says in the store that this worker is alive (its name and queues), every
    ``SEEN_EVERY`` seconds from a thread, and deletes its row as it stops: what a
    process submitting work reads to warn that no worker uses its store."""

    label = "prodinf presence"
    thread_name = "prodinf-presence"
    first_at_once = True

    def start(self, worker: Any) -> None:
        self._started = utcnow()
        super().start(worker)

    def stop(self, worker: Any) -> None:
        super().stop(worker)
        try:
            workers.forget(runtime_for(worker.app).store, worker.hostname)
        except Exception:  # the row ages out of SEEN_WITHIN anyway
            log.warning("could not remove worker %s from the store", worker.hostname)

    def every(self, app: Celery) -> float:
        return workers.SEEN_EVERY

    def one_pass(self, app: Celery, name: str, queues: list[str]) -> None:
        try:
            workers.seen(runtime_for(app).store, name, queues, os.getpid(), self._started)
        except Exception:  # a store outage: say so, and try at the next beat
            log.warning("could not record worker %s in the store", name, exc_info=True)


class WorkerMetrics(bootsteps.StartStopStep):  # type: ignore[misc]
    """With ``PRODINF_METRICS_PORT``, serves the worker's own ``/metrics`` on it: the
    counts of its processes, its pool's included, kept in a folder of its own
    (``PRODINF_HOME/metrics/<node name>``, emptied as it starts), so a portal on the
    same machine does not count them too."""

    label = "prodinf metrics"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._server: Any = None
        settings: Settings = worker.app.conf.prodinf_settings
        if settings.metrics_port is not None:
            # Here, not in start: every step is made before any starts, and Celery orders
            # the starts by hash, so the pool may fork before this step would start; its
            # processes must write where this one reads.
            own = settings.home / "metrics" / worker.hostname.replace(os.sep, "_")
            metrics.share(own, clean=True)

    def start(self, worker: Any) -> None:
        settings: Settings = worker.app.conf.prodinf_settings
        port, host = settings.metrics_port, settings.metrics_host
        if port is None:
            return
        registry = CollectorRegistry(auto_describe=False)
        registry.register(metrics.Counts())
        try:
            self._server, _ = start_http_server(port, host, registry=registry)
        except OSError as exc:  # the work goes on; its counts are not served
            log.error(
                "worker %s cannot serve /metrics on %s:%s (PRODINF_METRICS_PORT): %s",
                worker.hostname,
                host,
                port,
                exc.strerror or exc,
            )
            return
        log.info("worker %s serves /metrics on %s:%s", worker.hostname, host, port)

    def stop(self, worker: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _has_tasks() -> bool:
    """Whether this worker has tasks received and not yet done (running or waiting for
    a free process of its pool)."""
    return bool(worker_state.reserved_requests)


class WorkerReconciler(_ThreadStep):
    """Runs the reconciler for the worker's own queues in a thread of the worker.

    With it, a worker alone keeps its jobs moving: waits come due and lost
    messages are re-published even when no beat process runs.
    """

    label = "prodinf reconciler"
    thread_name = "prodinf-reconciler"

    def every(self, app: Celery) -> float:
        return float(app.conf.prodinf_settings.reconcile_interval)

    def one_pass(self, app: Celery, name: str, queues: list[str]) -> None:
        try:
            runtime_for(app).reconcile(queues, busy=_has_tasks)
        except Exception:  # never let the thread die; log and try next time
            log.exception("reconciler pass failed")
