"""One process's prodinf: settings, store, kinds, Celery app, runner and job service.

Importing it registers the built-in kinds (``prodinf.kinds``); building a
``Runtime`` checks the rules files and loads the plugins.

Built lazily, once per process (a forked worker child builds its own), from
the app's settings, so no connection is opened at import time.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Collection
from typing import Any

from kombu.exceptions import KombuError
from kombu.exceptions import OperationalError as KombuOperationalError

import prodinf.kinds  # noqa: F401  (registers the built-in kinds)
from prodinf.config import Settings
from prodinf.engine.reconciler import reconcile
from prodinf.engine.registry import Registry, registry
from prodinf.engine.runner import Runner
from prodinf.engine.service import Jobs
from prodinf.engine.watches import look_due
from prodinf.exceptions import BrokerUnavailable
from prodinf.kinds.rules_files import check_rules_files
from prodinf.redact import redact_text
from prodinf.store import JobStore

__all__ = [
    "EMAIL_WHEN_COMPLETE",
    "PRIORITY_NEW",
    "PRIORITY_REDRIVE",
    "RECONCILE",
    "RUN_JOB",
    "Runtime",
    "runtime_for",
]

#: Name of the task that advances one job.
RUN_JOB = "prodinf.run_job"
#: Name of the periodic task that re-drives due jobs.
RECONCILE = "prodinf.reconcile"
#: Name of ``email_when_complete.delay(url, address)``, routed to the email queue.
EMAIL_WHEN_COMPLETE = "prodinf.email_when_complete"

#: Message priorities (RabbitMQ; the embedded broker ignores them). New work goes
#: before re-drives of waits, so thousands of pending waits never hold up a new job.
PRIORITY_NEW = 5
PRIORITY_REDRIVE = 0

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


class Runtime:
    """Everything a worker, the portal or the CLI needs to run and submit jobs."""

    def __init__(self, settings: Settings, celery: Any, kinds: Registry | None = None) -> None:
        self.settings = settings
        self.celery = celery
        self.registry = kinds or registry
        check_rules_files(settings)
        self.registry.load_plugins(settings.plugins)
        self.store = JobStore(settings.store_url)
        self.runner = Runner(self.store, self.registry, settings, self.publish)
        self.jobs = Jobs(self.store, self.registry, settings, self.publish)

    def publish(self, job_id: str, queue: str, priority: int = PRIORITY_NEW) -> None:
        """Send a run message for ``job_id``; raises ``BrokerUnavailable`` if not confirmed."""
        try:
            self.celery.send_task(
                RUN_JOB,
                args=[job_id],
                queue=queue,
                priority=priority,
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
        """Publish a job the reconciler found due, behind any new work on its queue."""
        self.publish(job_id, queue, PRIORITY_REDRIVE)

    def reconcile(self, queues: Collection[str] | None = None) -> int:
        """Look at the URL watches that are due (waking the steps they concern), then
        publish every due job on ``queues`` (or all)."""
        look_due(self.store)
        return reconcile(
            self.store, self.republish, redrive_after=self.settings.redrive_after, queues=queues
        )

    def check_broker(self) -> None:
        """Raise ``BrokerUnavailable`` unless the broker accepts a connection."""
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
        except (KombuError, KombuOperationalError, OSError) as exc:
            raise BrokerUnavailable(f"broker unavailable: {exc}") from exc

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
            found[1].store.engine.dispose(close=False)
        runtime = Runtime(app.conf.prodinf_settings, app)
        _runtimes[app] = (pid, runtime)
        return runtime
