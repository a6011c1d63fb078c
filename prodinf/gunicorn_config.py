"""gunicorn's configuration for the portal::

    gunicorn -c python:prodinf.gunicorn_config -w 4 -b 0.0.0.0:5000 prodinf.wsgi:app

Only what ``/metrics`` needs of gunicorn; every other setting comes from the command
line. gunicorn's workers are processes: each keeps its counts in its own files of one
folder, and whichever worker answers a scrape sums them all (prometheus_client's
multiprocess mode, :mod:`prodinf.metrics`). Without this file each answer would hold
the counts of the one worker that happened to answer.

``on_starting``
    In the master, before it forks a worker: the folder is ``PROMETHEUS_MULTIPROC_DIR``
    if set, else ``PRODINF_HOME/metrics``; emptied (a new run's counts start at zero)
    and handed to the workers.
``child_exit``
    A worker has ended (restarted after ``--max-requests``, killed, timed out): what it
    held only while alive goes (prometheus_client's ``mark_process_dead``); its counts
    stay, summed with the others'.

gunicorn reads this module's names as its settings: nothing else is public here.
"""

from __future__ import annotations

from typing import Any as _Any

from prodinf import metrics as _metrics
from prodinf.config import get_settings as _get_settings

__all__ = ["child_exit", "on_starting"]


def on_starting(server: _Any) -> None:
    _metrics.share(_metrics.folder() or _get_settings().home / "metrics", clean=True)


def child_exit(server: _Any, worker: _Any) -> None:
    _metrics.process_ended(worker.pid)
