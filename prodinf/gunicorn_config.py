"""gunicorn's configuration for the portal::

    gunicorn -c python:prodinf.gunicorn_config -w 4 -b 0.0.0.0:5000 prodinf.wsgi:app

What ``/metrics`` needs of gunicorn, and the checks of where it listens; every other
setting comes from the command line. gunicorn's workers are processes: each keeps its
counts in its own files of one folder, and whichever worker answers a scrape sums them
all (prometheus_client's multiprocess mode, :mod:`prodinf.metrics`). Without this file
each answer would hold the counts of the one worker that happened to answer.

``on_starting``
    In the master, before it listens or forks a worker. Every address of ``--bind``
    beyond loopback (a ``unix:`` socket is local; an inherited ``fd://`` one is taken as
    beyond) is checked as ``prodinf portal`` checks its ``--host``: with
    ``PRODINF_AUTH=none`` gunicorn refuses to start, naming the setting, unless
    ``PRODINF_INSECURE`` is true, which is logged as a warning; with the built-in secret
    key it refuses, naming ``PRODINF_SECRET_KEY``. Then the metrics folder:
    ``PROMETHEUS_MULTIPROC_DIR`` if set, else ``PRODINF_HOME/metrics``; emptied (a new
    run's counts start at zero) and handed to the workers.
``child_exit``
    A worker has ended (restarted after ``--max-requests``, killed, timed out): what it
    held only while alive goes (prometheus_client's ``mark_process_dead``); its counts
    stay, summed with the others'.

gunicorn reads this module's names as its settings: nothing else is public here.
"""

from __future__ import annotations

from typing import Any as _Any

from gunicorn.util import parse_address as _parse_address  # type: ignore[import-untyped]

from prodinf import metrics as _metrics
from prodinf.config import get_settings as _get_settings
from prodinf.engine.logformat import configure as _configure_logging
from prodinf.exceptions import ProdinfError as _ProdinfError
from prodinf.portal.hardening import refuse_an_open_portal as _refuse_an_open_portal
from prodinf.portal.hardening import refuse_built_in_secret as _refuse_built_in_secret

__all__ = ["child_exit", "on_starting"]


def _hosts(binds: list[str]) -> list[str]:
    """The addresses of gunicorn's ``--bind`` values that a network reaches: a host for
    ``host:port``, ``fd://N`` for an inherited socket; none for a ``unix:`` socket."""
    hosts = []
    for bind in binds:
        address = _parse_address(bind)
        if isinstance(address, tuple):
            hosts.append(str(address[0]) or "0.0.0.0")  # ":5000" is every interface
        elif isinstance(address, int):
            hosts.append(f"fd://{address}")
    return hosts


def on_starting(server: _Any) -> None:
    settings = _get_settings()
    # The master's own lines (the warning below) as the portal's: PRODINF_LOG_FORMAT.
    _configure_logging(settings.log_format, settings.log_level)
    try:
        for host in _hosts(list(server.cfg.bind)):
            _refuse_an_open_portal(settings, host)
            _refuse_built_in_secret(settings.model_copy(update={"host": host}))
    except _ProdinfError as exc:
        if server.pidfile is not None:  # made before this hook; no gunicorn runs
            server.pidfile.unlink()
        raise RuntimeError(exc.message) from None  # gunicorn says "Error: ..." and exits 1
    _metrics.share(_metrics.folder() or settings.home / "metrics", clean=True)


def child_exit(server: _Any, worker: _Any) -> None:
    _metrics.process_ended(worker.pid)
