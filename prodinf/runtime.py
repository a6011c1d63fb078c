"""One process's prodinf: settings, store, kinds, Celery app, runner and job service.

Importing it registers the built-in kinds (``prodinf.kinds``); building a
``Runtime`` checks the rules files and loads the plugins.

Built lazily, once per process (a forked worker child builds its own), from
the app's settings, so no connection is opened at import time.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Collection
from typing import Any

from kombu.exceptions import KombuError
from kombu.exceptions import OperationalError as KombuOperationalError

import prodinf.kinds  # noqa: F401  (registers the built-in kinds)
from prodinf.config import Settings
from prodinf.engine.messages import LANE_SUFFIX, lane
from prodinf.engine.reconciler import reconcile
from prodinf.engine.registry import Registry, registry
from prodinf.engine.runner import Runner
from prodinf.engine.service import Jobs
from prodinf.engine.watches import look_due
from prodinf.exceptions import BrokerUnavailable
from prodinf.files import secure_home
from prodinf.kinds.rules_files import check_rules_files
from prodinf.outbound import Guard
from prodinf.redact import redact_text
from prodinf.store import JobStore, workers

__all__ = [
    "EMAIL_WHEN_COMPLETE",
    "LANE_SUFFIX",
    "PRIORITY",
    "RECONCILE",
    "RUN_JOB",
    "SUBMIT_EVENT",
    "Runtime",
    "dead_letters",
    "lane",
    "logical_queues",
    "runtime_for",
]

#: Name of the task that advances one job.
RUN_JOB = "prodinf.run_job"
#: Name of the periodic task that re-drives due jobs.
RECONCILE = "prodinf.reconcile"
#: Name of ``email_when_complete.delay(url, address)``, routed to the email queue.
EMAIL_WHEN_COMPLETE = "prodinf.email_when_complete"
#: Name of ``submit_event.delay(type, dataset=..., payload=...)``, routed to the event queue.
SUBMIT_EVENT = "prodinf.submit_event"

#: The priority every message is sent with. Classic queues are declared with
#: ``x-max-priority`` 5 (as before lanes existed: a queue is never redeclared with
#: other arguments); nothing depends on priorities, which quorum queues lack.
PRIORITY = 5

#: Suffix of the queue where quorum queues put a message delivered
#: ``x-delivery-limit`` times: ``<jobs queue>.dead``, which the reconciler drains
#: (see ``Runtime.drain_dead_letters``).
DEAD_SUFFIX = ".dead"


def dead_letters(settings: Settings) -> str:
    """The queue of dead-lettered messages: ``jobs.dead`` with the default queues."""
    return settings.queue_jobs + DEAD_SUFFIX


def logical_queues(names: Collection[str]) -> list[str]:
    """The queues jobs name (``jobs``, ``email``) among broker queue names (lanes too)."""
    found = (n.removesuffix(LANE_SUFFIX) for n in names if not n.endswith(DEAD_SUFFIX))
    return list(dict.fromkeys(found))


log = logging.getLogger(__name__)

_lock = threading.Lock()
#: Each Celery app's runtime in this process, with the pid that built it.
_runtimes: weakref.WeakKeyDictionary[Any, tuple[int, Runtime]] = weakref.WeakKeyDictionary()


def _new_lock_in_child() -> None:
    # A thread of the parent (the worker's reconciler) may hold the lock while the
    # pool forks; the child would inherit it held, and its first task would wait
    # for it forever.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


class _Sent:
    """What ``send_task`` returns for a run message: its id, and no result backend."""

    def __init__(self, task_id: str) -> None:
        self.id = task_id
        self.ignored = True


class Runtime:
    """Everything a worker, the portal or the CLI needs to run and submit jobs."""

    def __init__(self, settings: Settings, celery: Any, kinds: Registry | None = None) -> None:
        self.settings = settings
        self.celery = celery
        self.registry = kinds or registry
        check_rules_files(settings)
        self.registry.load_plugins(settings.plugins)
        secure_home(settings.home)  # what an older prodinf left open to others: tightened
        self.store = JobStore(settings.store_url)
        self.runner = Runner(self.store, self.registry, settings, self.publish)
        self.jobs = Jobs(self.store, self.registry, settings, self.publish)

    def publish(self, job_id: str, queue: str) -> None:
        """Send a run message for ``job_id``; raises ``BrokerUnavailable`` if not confirmed."""
        try:
            self.celery.send_task(
                RUN_JOB,
                args=[job_id],
                queue=queue,
                priority=PRIORITY,
                # No result: Celery would otherwise build its result backend (a
                # database connection and CREATE TABLEs) in every portal thread.
                ignore_result=True,
                add_to_parent=False,
                result_cls=_Sent,
                retry=True,
                retry_policy={
                    "max_retries": 3,
                    "interval_start": 0.2,
                    "interval_step": 0.5,
                    "interval_max": 2.0,
                },
            )
        except (KombuError, KombuOperationalError, OSError) as exc:
            raise BrokerUnavailable(
                f"broker unavailable ({redact_text(self.settings.broker)}): {exc}"
            ) from exc

    def republish(self, job_id: str, queue: str) -> None:
        """Publish a job the reconciler found due on its queue's lane, beside new work."""
        self.publish(job_id, lane(queue))

    def reconcile(
        self, queues: Collection[str] | None = None, *, busy: Callable[[], bool] | None = None
    ) -> int:
        """Send the due jobs of ``queues`` (or all) on their lanes, look at the URL
        watches that are due (waking the steps they concern), and send the jobs they
        woke. Returns how many were sent. ``busy()``: whether the calling worker has
        tasks to run, when its looks give way to them (see :mod:`prodinf.engine.watches`)."""
        only = None if queues is None else logical_queues(queues)
        settings = self.settings
        sent = 0
        if settings.queue_type == "quorum":
            sent += self.drain_dead_letters()

        def one_pass() -> int:
            return reconcile(
                self.store,
                self.republish,
                resend_after=settings.resend_after,
                redrive_after=settings.redrive_after,
                queues=only,
                limit=settings.reconcile_batch,
            )

        sent += one_pass()
        if look_due(self.store, guard=Guard.of(settings), busy=busy):
            sent += one_pass()
        return sent

    def drain_dead_letters(self, limit: int = 100) -> int:
        """Send again the jobs whose messages a quorum queue dead-lettered (delivered
        ``x-delivery-limit`` times without an ack: workers killed while running them).

        The store holds each job's state, so its message is sent again on the lane
        (a step that kills every worker running it is resumed after each lease, and
        its history shows each ``step.resumed``). Any other message found there is
        logged as an error with its task and id, then dropped. The queue is declared
        here too: a worker consumes it nowhere, and a dead letter with no queue to go
        to would be dropped by the broker.
        """
        name = dead_letters(self.settings)
        declared = [q for q in self.celery.conf.task_queues if q.name == name]
        if not declared:  # classic queues: nothing is dead-lettered
            return 0
        drained = 0
        try:
            with self.celery.connection_for_write() as conn:
                dead = declared[0](conn.default_channel)
                dead.declare()
                while drained < limit:
                    message = dead.get(no_ack=False, accept=["json"])
                    if message is None:
                        break
                    drained += 1
                    self._resend_dead_letter(message)
                    message.ack()
        except Exception as exc:  # a broker down or the queue not declared yet: next pass
            log.warning("could not drain %s: %s", name, exc)
        return drained

    def _resend_dead_letter(self, message: Any) -> None:
        headers = message.headers or {}
        task, task_id = headers.get("task"), headers.get("id")
        deaths = headers.get("x-death") or [{}]
        queue = str(deaths[0].get("queue") or self.settings.queue_jobs)
        if task == RUN_JOB:
            args = message.decode()[0] if message.body else []
            if args:
                log.warning(
                    "job %s: its message was delivered %s times without an ack; sent again",
                    args[0],
                    headers.get("x-delivery-count", "many"),
                )
                self.republish(str(args[0]), logical_queues([queue])[0])
                return
        log.error(
            "dropped a message of task %s (id %s) from %s: delivered too many times",
            task,
            task_id,
            queue,
        )

    def check_broker(self) -> None:
        """Raise ``BrokerUnavailable`` unless the broker accepts a connection."""
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
        except (KombuError, KombuOperationalError, OSError) as exc:
            raise BrokerUnavailable(f"broker unavailable: {exc}") from exc

    def unconsumed(self, queue: str) -> str | None:
        """A warning when no worker consuming ``queue`` (a configured queue name) has
        used this store in the last minute, else ``None``: work sent there waits. Most
        often the process found another store than the workers (another home)."""
        try:
            running = workers.recent(self.store)
        except Exception:
            running = []
        if any(queue in w.queues for w in running):
            return None
        settings = self.settings
        where = (
            f"the store in {settings.home} (PRODINF_HOME)"
            if settings.database_url is None
            else f"the store {redact_text(settings.store_url)} (PRODINF_DATABASE_URL)"
        )
        others = f"; workers seen: {', '.join(w.name for w in running)}" if running else ""
        return (
            f"no worker of queue {queue} has used {where} in the last "
            f"{workers.SEEN_WITHIN:.0f} s{others}, so this work waits until one does: start "
            "them with `prodinf up`, or point PRODINF_HOME (PRODINF_DATABASE_URL) at the "
            "store your workers use (`prodinf up` prints it)"
        )

    def close(self) -> None:
        """Release the store's and the broker's connections."""
        self.celery.close()
        self.store.dispose()


def runtime_for(app: Any) -> Runtime:
    """The runtime of the Celery ``app`` in this process, built on first use from the
    settings the app was made with (``app.conf.prodinf_settings``)."""
    pid = os.getpid()
    found = _runtimes.get(app)
    if found is not None and found[0] == pid:
        return found[1]
    with _lock:
        found = _runtimes.get(app)
        if found is not None and found[0] == pid:
            return found[1]
        if found is not None:  # inherited across fork: never use the parent's connections
            found[1].store.forget_connections()
        runtime = Runtime(app.conf.prodinf_settings, app)
        _runtimes[app] = (pid, runtime)
        return runtime
