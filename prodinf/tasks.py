"""The Celery tasks: thin wrappers that hand a job id to this process's runtime.

``ProdinfTask`` is the app's ``task_cls`` (as Flask's ``examples/celery`` binds its
``FlaskTask``): every task reaches the runtime as ``self.runtime``, built once per
process from the settings the app was made with. ``register_tasks`` binds the tasks
to whichever app the factory makes; this module never builds an app.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import Task
from celery.exceptions import Ignore

from prodinf.exceptions import BrokerUnavailable, StoreUnavailable
from prodinf.kinds.event_record import record_event
from prodinf.runtime import (
    EMAIL_WHEN_COMPLETE,
    RECONCILE,
    RUN_JOB,
    SUBMIT_EVENT,
    Runtime,
    lane,
    runtime_for,
)

__all__ = ["ProdinfTask", "register_tasks"]

log = logging.getLogger(__name__)

#: Seconds a task waits before it goes back to its lane when the store is down.
AGAIN_AFTER = 2.0


#: Tasks user code sends (``email_when_complete.delay(...)``): see ``apply_async``.
USER_TASKS = frozenset({EMAIL_WHEN_COMPLETE, SUBMIT_EVENT})
#: (process, queue) pairs already checked for a worker, so each warns at most once.
_checked: set[tuple[int, str]] = set()


class ProdinfTask(Task):  # type: ignore[misc]
    """A task of a prodinf app; ``self.runtime`` is the process's :class:`Runtime`."""

    @property
    def runtime(self) -> Runtime:
        return runtime_for(self.app)

    def apply_async(self, *args: Any, **kwargs: Any) -> Any:
        """Send the task; the first time a process sends a user task to a queue that no
        worker of its store has consumed of late, log a warning (on stderr when logging
        is not set up): a script run from another folder may have found another home
        than the workers, and would wait for ever."""
        sent = super().apply_async(*args, **kwargs)
        if self.name in USER_TASKS:
            queue = kwargs.get("queue") or (self.app.amqp.router.route({}, self.name) or {}).get(
                "queue"
            )
            name = getattr(queue, "name", queue)
            if isinstance(name, str) and (os.getpid(), name) not in _checked:
                _checked.add((os.getpid(), name))
                try:
                    warning = self.runtime.unconsumed(name)
                except Exception:  # a warning must never fail a send that worked
                    warning = None
                if warning is not None:
                    log.warning("%s", warning)
        return sent

    def again_soon(self, exc: Exception) -> Exception:
        """Send this task again, on its queue's lane, after ``AGAIN_AFTER`` seconds.

        The wait is a sleep in the worker, not a countdown: a countdown is held in
        the worker's memory (or, on quorum queues, in delay exchanges that route by
        topic), and a store outage would pile them up. One message per worker
        process at a time comes back every couple of seconds, so work resumes
        within seconds of the store's return without a flood.
        """
        time.sleep(AGAIN_AFTER)
        queue = (self.request.delivery_info or {}).get("routing_key") or None
        options = {"queue": lane(queue)} if queue else {}
        return self.retry(exc=exc, countdown=0, **options)  # type: ignore[no-any-return]


def register_tasks(app: Any) -> None:
    """Register prodinf's tasks on ``app`` (whose ``task_cls`` is :class:`ProdinfTask`)."""

    @app.task(name=RUN_JOB, shared=False, bind=True, ignore_result=True, max_retries=None)  # type: ignore[untyped-decorator]
    def run_job(self: ProdinfTask, job_id: str) -> None:
        try:
            self.runtime.runner.drive(job_id)
        except StoreUnavailable as exc:
            # The store is the truth; without it nothing can be recorded. Try
            # again later; the reconciler also re-drives the job once it is back.
            log.warning("store unavailable while running job %s: %s", job_id, exc)
            raise self.again_soon(exc) from exc

    @app.task(name=RECONCILE, shared=False, bind=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def reconcile(self: ProdinfTask, queues: list[str] | None = None) -> int:
        return self.runtime.reconcile(queues)

    @app.task(  # type: ignore[untyped-decorator]
        name=EMAIL_WHEN_COMPLETE, shared=False, bind=True, ignore_result=False, max_retries=None
    )
    def email_when_complete(self: ProdinfTask, url: str, address: str, **options: Any) -> None:
        """Mail ``address`` once ``url`` reports a final status.

        The task submits an ``email_when_complete`` job (idempotent on the task
        id, so a redelivered message submits nothing new) and ends without a
        state of its own (``Ignore``): the job stores ``{"message_id", "to",
        "subject"}`` as this task's result once the mail is handed over, so
        ``ready()`` means "the email was sent". Bad input fails the task at once
        with a ``ValidationError`` naming the field.
        """
        params = {**options, "url": url, "address": address, "celery_task_id": self.request.id}
        try:
            self.runtime.jobs.submit(
                "email_when_complete",
                params,
                idempotency_key=f"celery-task:{self.request.id}",
                submitted_by="celery:email_when_complete",
            )
        except (StoreUnavailable, BrokerUnavailable) as exc:
            # The job is not stored or not sent yet; the same task id makes the
            # next try find it (and send it again) rather than make another.
            log.warning("email_when_complete %s: %s; trying again", self.request.id, exc)
            raise self.again_soon(exc) from exc
        raise Ignore()

    @app.task(  # type: ignore[untyped-decorator]
        name=SUBMIT_EVENT, shared=False, bind=True, ignore_result=False, max_retries=None
    )
    def submit_event(
        self: ProdinfTask,
        type: str,
        dataset: str | None = None,
        payload: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        """Record an event; its job starts every process subscribed to it.

        Idempotent on the task id (a redelivered message records nothing new). The
        result is ``{"id", "job_id", "processes"}``: the event and what it starts. Bad
        input fails the task at once with a ``ValidationError`` naming the field.
        """
        document: dict[str, Any] = {
            "type": type,
            "payload": payload or {},
            "source": source or "celery:submit_event",
            "idempotency_key": f"celery-task:{self.request.id}",
        }
        if dataset is not None:
            document["dataset"] = dataset
        rt = self.runtime
        try:
            event, _ = record_event(rt.store, rt.registry, rt.settings, rt.publish, document)
        except (StoreUnavailable, BrokerUnavailable) as exc:
            log.warning("submit_event %s: %s; trying again", self.request.id, exc)
            raise self.again_soon(exc) from exc
        processes = [p["subscription"] for p in event.get("processes", [])]
        return {"id": event["id"], "job_id": event["job_id"], "processes": processes}
