"""Celery task results in the job store: where ``email_when_complete.delay()``'s result goes.

A Celery task that hands its work to a prodinf job ends without a state of its own;
the job writes the task's result here once its work is done, so the caller's
``AsyncResult`` turns ready then. Both the Celery app (``celery_app``) and the job
(a kind) use the same tables, named once here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery

__all__ = ["RESULT_TABLES", "results_backend"]

#: Celery's result tables in the store. Celery configures its result models
#: process-wide, so every backend prodinf builds must name the same tables.
RESULT_TABLES = {"task": "prodinf_celery_taskmeta", "group": "prodinf_celery_groupmeta"}


@lru_cache(maxsize=8)
def results_backend(url: str) -> Any:
    """Celery's result backend at ``url``: how a job stores a Celery task's result by id."""
    app = Celery("prodinf-results", set_as_current=False)
    app.conf.update(
        result_backend=url,
        database_table_names=RESULT_TABLES,
        result_serializer="json",
        accept_content=["json"],
    )
    return app.backend
