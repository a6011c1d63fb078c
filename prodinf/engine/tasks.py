"""The Celery tasks: thin wrappers that hand a job id to the runner.

They live here, in a module that never builds an app: ``register_tasks`` binds
them to whichever app the factory makes.
"""

from __future__ import annotations

import logging
from typing import Any

from prodinf.exceptions import StoreUnavailable

__all__ = ["EMAIL_WHEN_COMPLETE", "RECONCILE", "RUN_JOB", "register_tasks"]

log = logging.getLogger(__name__)

#: Name of the task that advances one job.
RUN_JOB = "prodinf.run_job"
#: Name of the periodic task that re-drives due jobs.
RECONCILE = "prodinf.reconcile"
#: Name of ``email_when_complete.delay(url, address)``, routed to the email queue.
EMAIL_WHEN_COMPLETE = "prodinf.email_when_complete"


def register_tasks(app: Any) -> None:
    """Register prodinf's tasks on ``app``."""
    from prodinf.runtime import runtime_for

    @app.task(name=RUN_JOB, shared=False, bind=True, ignore_result=True, max_retries=None)  # type: ignore[untyped-decorator]
    def run_job(self: Any, job_id: str) -> None:
        try:
            runtime_for(self.app).runner.drive(job_id)
        except StoreUnavailable as exc:
            # The store is the truth; without it nothing can be recorded. Try
            # again later; the reconciler also re-drives the job once it is back.
            log.warning("store unavailable while running job %s: %s", job_id, exc)
            raise self.retry(countdown=5, exc=exc) from exc

    @app.task(name=RECONCILE, shared=False, bind=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def reconcile(self: Any, queues: list[str] | None = None) -> int:
        return runtime_for(self.app).reconcile(queues)

    @app.task(name=EMAIL_WHEN_COMPLETE, shared=False, bind=True, ignore_result=False)  # type: ignore[untyped-decorator]
    def email_when_complete(self: Any, url: str, address: str, **options: Any) -> None:
        """Mail ``address`` once ``url`` reports a final status.

        The task submits an ``email_when_complete`` job (idempotent on the task
        id, so a redelivered message submits nothing new) and ends without a
        state of its own (``Ignore``): the job stores ``{"message_id", "to",
        "subject"}`` as this task's result once the mail is handed over, so
        ``ready()`` means "the email was sent". Bad input fails the task at once
        with a ``ValidationError`` naming the field.
        """
        from celery.exceptions import Ignore

        params = {**options, "url": url, "address": address, "celery_task_id": self.request.id}
        runtime_for(self.app).jobs.submit(
            "email_when_complete",
            params,
            idempotency_key=f"celery-task:{self.request.id}",
            submitted_by="celery:email_when_complete",
        )
        raise Ignore()
