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

__all__ = ["RESULT_TABLES", "SQLITE_BUSY_SECONDS", "engine_options", "results_backend"]

#: Celery's result tables in the store. Celery configures its result models
#: process-wide, so every backend prodinf builds must name the same tables.
RESULT_TABLES = {"task": "prodinf_celery_taskmeta", "group": "prodinf_celery_groupmeta"}


#: How long a write to a SQLite store waits for another's to end, as the job store waits.
SQLITE_BUSY_SECONDS = 30


def engine_options(url: str) -> dict[str, Any]:
    """Celery's ``database_engine_options`` for the result backend at ``url``: on SQLite,
    a write waits for the store's other writers as long as the job store's own do
    (sqlite3's 5 s default gave up under load, and the task's result was lost)."""
    if url.removeprefix("db+").startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}}
    return {}


@lru_cache(maxsize=8)
def results_backend(url: str) -> Any:
    """Celery's result backend at ``url``: how a job stores a Celery task's result by id."""
    app = Celery("prodinf-results", set_as_current=False)
    app.conf.update(
        result_backend=url,
        database_table_names=RESULT_TABLES,
        database_engine_options=engine_options(url),
        result_serializer="json",
        accept_content=["json"],
    )
    return app.backend
