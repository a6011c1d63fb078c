"""The counters and histograms prodinf's processes keep, and the folder they share.

The engine counts what it records, once the transaction that records it commits:
jobs created and ended, each run of a step and how it came out, how long runs and
jobs took and how long work waited for a worker; the mail and webhook deliveries and
the calls to remote services count as they happen. The functions below are the only
way in: they take label values that are bounded by configuration (kinds, steps,
queues, services, never a job's id) and they never raise (a count lost is logged,
the work goes on). docs/metrics.rst lists every metric.

Where the counts live:

- In this process's memory (:data:`REGISTRY`), unless a folder is shared.
- In a folder every process of one machine writes to, each its own files
  (prometheus_client's multiprocess mode), when ``PROMETHEUS_MULTIPROC_DIR`` names
  it as the process starts or :func:`share` is called before the first count:
  gunicorn's workers (``prodinf.gunicorn_config``), a Celery worker's pool, and
  everything ``prodinf up`` starts. Whoever answers a scrape sums every file
  (:func:`collected`), the files of processes that have ended included.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ParamSpec

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

__all__ = [
    "ENV",
    "REGISTRY",
    "Counts",
    "collected",
    "folder",
    "job_finished",
    "job_submitted",
    "notified",
    "process_ended",
    "service_called",
    "share",
    "shared",
    "started_after",
    "step_abandoned",
    "step_ran",
]

log = logging.getLogger(__name__)

#: The variable prometheus_client reads for the shared folder (its name, not prodinf's).
ENV = "PROMETHEUS_MULTIPROC_DIR"

#: This process's counts when no folder is shared (never the process-wide default
#: registry: a scrape shows prodinf's metrics, not whatever else the process made).
REGISTRY = CollectorRegistry(auto_describe=True)

#: Seconds: a step runs from milliseconds (a lookup) to an hour (a database copy).
_RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Seconds: a job takes from milliseconds to days (a handover waits for its window).
_JOB_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400, 604800)
#: Seconds from ready to started: milliseconds when workers are free.
_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

JOBS_SUBMITTED = Counter(
    "prodinf_jobs_submitted",
    "Jobs created: submitted, started by a step, a notification, an event's job.",
    ["kind"],
    registry=REGISTRY,
)
JOBS_FINISHED = Counter(
    "prodinf_jobs_finished",
    "Jobs that ended, by their final status.",
    ["kind", "status"],
    registry=REGISTRY,
)
STEPS = Counter(
    "prodinf_steps",
    "Runs of a step, by how each came out: succeeded, waiting, retried, failed, reverted, "
    "revert_failed; abandoned when its worker stopped answering and another took it over.",
    ["kind", "step", "outcome"],
    registry=REGISTRY,
)
NOTIFICATIONS = Counter(
    "prodinf_notifications",
    "Tries to deliver a mail or a webhook: delivered, outbox (no SMTP server set), error.",
    ["channel", "outcome"],
    registry=REGISTRY,
)
SERVICE_CALLS = Counter(
    "prodinf_service_calls",
    "Calls to the remote services of PRODINF_SERVICES: ok, unavailable (tried again), error.",
    ["service", "outcome"],
    registry=REGISTRY,
)
STEP_SECONDS = Histogram(
    "prodinf_step_duration_seconds",
    "Seconds one run of a step's code took (an outcome recorded), by kind and step.",
    ["kind", "step"],
    buckets=_RUN_BUCKETS,
    registry=REGISTRY,
)
JOB_SECONDS = Histogram(
    "prodinf_job_duration_seconds",
    "Seconds from a job's creation to its end, by kind.",
    ["kind"],
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
SCHEDULE_TO_START = Histogram(
    "prodinf_schedule_to_start_seconds",
    "Seconds from work being ready (a job queued, a wait or retry come due) to a worker "
    "starting its step, by queue.",
    ["queue"],
    buckets=_WAIT_BUCKETS,
    registry=REGISTRY,
)

#: Whether this process has counted anything yet (``share`` must come before).
_counted = False

_P = ParamSpec("_P")


def _never_raises(count: Callable[_P, None]) -> Callable[_P, None]:
    """``count``, logging instead of raising: counting never fails the work counted."""

    @functools.wraps(count)
    def counting(*args: _P.args, **kwargs: _P.kwargs) -> None:
        global _counted
        _counted = True
        try:
            count(*args, **kwargs)
        except Exception:  # a full disk, a folder removed under a running process
            log.warning("could not count %s%r", count.__name__, args, exc_info=True)

    return counting


@_never_raises
def job_submitted(kind: str) -> None:
    """A job of ``kind`` was created (its rows committed)."""
    JOBS_SUBMITTED.labels(kind).inc()


@_never_raises
def job_finished(kind: str, status: str, seconds: float) -> None:
    """A job of ``kind`` ended ``status``, ``seconds`` after it was created."""
    JOBS_FINISHED.labels(kind, status).inc()
    JOB_SECONDS.labels(kind).observe(max(0.0, seconds))


@_never_raises
def step_ran(kind: str, step: str, outcome: str, seconds: float) -> None:
    """A run of ``step`` took ``seconds`` and came out ``outcome`` (recorded)."""
    STEPS.labels(kind, step, outcome).inc()
    STEP_SECONDS.labels(kind, step).observe(max(0.0, seconds))


@_never_raises
def step_abandoned(kind: str, step: str) -> None:
    """A run of ``step`` never recorded an outcome: its worker stopped answering and
    another took the step over."""
    STEPS.labels(kind, step, "abandoned").inc()


@_never_raises
def started_after(queue: str, seconds: float) -> None:
    """A worker on ``queue`` started a step ``seconds`` after it was ready."""
    SCHEDULE_TO_START.labels(queue).observe(max(0.0, seconds))


@_never_raises
def notified(channel: str, outcome: str) -> None:
    """A try to deliver on ``channel`` (``email``, ``webhook``) came out ``outcome``."""
    NOTIFICATIONS.labels(channel, outcome).inc()


@_never_raises
def service_called(service: str, outcome: str) -> None:
    """A call to the remote ``service`` came out ``outcome``."""
    SERVICE_CALLS.labels(service, outcome).inc()


# -- where the counts live ------------------------------------------------------------


def folder() -> Path | None:
    """The folder this process's counts are shared in (``PROMETHEUS_MULTIPROC_DIR``)."""
    value = os.environ.get(ENV, "").strip()
    return Path(value) if value else None


def shared() -> bool:
    """Whether this process writes its counts to the shared folder."""
    return folder() is not None and values.ValueClass is not values.MutexValue


def share(path: Path, *, clean: bool = False) -> None:
    """Write this process's counts to ``path`` from now on, and (through the
    environment) those of the processes it starts; ``clean`` empties it first (a new
    run of a deployment: the files of the last one's processes go).

    :raises RuntimeError: this process has counted already (those counts would stay
        in its memory, out of every scrape).
    """
    if _counted:
        raise RuntimeError("prodinf.metrics.share must come before the first count")
    path = path.resolve()
    if clean and path.is_dir():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(path)
    # prometheus_client chooses where counts live as it is imported; a process that
    # imported it before the folder was known (prodinf up, gunicorn's master) chooses
    # again here, before anything is counted.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def process_ended(pid: int) -> None:
    """A process that shared the folder has ended (gunicorn's ``child_exit``): what it
    held only while alive goes. Its counts stay, summed with everyone's."""
    path = folder()
    if path is not None and path.is_dir():
        mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def collected() -> Iterable[Metric]:
    """The counts a scrape of this process reports: every process's in the shared
    folder, or this process's own."""
    path = folder()
    if shared() and path is not None and path.is_dir():
        shared_counts = MultiProcessCollector(None, str(path))  # type: ignore[no-untyped-call]
        return shared_counts.collect()  # type: ignore[no-any-return,no-untyped-call]
    return REGISTRY.collect()


class Counts(Collector):
    """What a scrape of this process reports of the counts (:func:`collected`), as a
    collector to register in the registry that answers it."""

    def collect(self) -> Iterable[Metric]:
        return collected()
