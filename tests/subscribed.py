"""Events on an embedded portal whose subscriptions fetch from a loopback site, for the
event pages' tests (Flask's test client and a real Chromium).

The site's address travels in the event's payload (``{"base": site.base}``), as a
user types it into the form: ``dataset.updated`` of a core database starts ``fetch``
(``/ok``), ``fetch-release`` after it (``/ok?release=<release>``) and ``fetch-missing``
(``/missing``, a 404: it fails, and so does the event); ``dataset.created`` starts
``fetch`` alone. Only one event runs at a time: ``drive_event`` drives every job that
has not ended.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flask import Flask

from prodinf.config import Settings
from prodinf.kinds.event_record import record_event
from prodinf.status import TERMINAL
from prodinf.store.events import get_event
from tests.embedded import runtime_of

__all__ = ["CORE", "SUBSCRIPTIONS", "drive_event", "record", "subscribed_settings"]

#: A core database the shipped naming rules read: type core, release 115, assembly 38.
CORE = "homo_sapiens_core_115_38"

SUBSCRIPTIONS = """
subscriptions:
  - name: fetch
    on: ["dataset.*"]
    run:
      kind: http_get
      params: {url: "{{ payload.base }}/ok"}
  - name: fetch-release
    on: [dataset.updated]
    where: {type: core}
    run:
      kind: http_get
      params: {url: "{{ payload.base }}/ok?release={{ dataset.release }}"}
    after: [fetch]
  - name: fetch-missing
    on: [dataset.updated]
    run:
      kind: http_get
      params: {url: "{{ payload.base }}/missing"}
"""


def subscribed_settings(home: Path) -> Settings:
    """Embedded settings under ``home`` whose subscriptions are ``SUBSCRIPTIONS``."""
    path = home / "subscriptions.yaml"
    path.write_text(SUBSCRIPTIONS)
    return Settings(
        home=home,
        reconcile_interval=0.2,
        lease_seconds=3.0,
        redrive_after=30.0,
        subscriptions=path,
        sqlite_roots=[home.parent],
    )


def record(app: Flask, **document: Any) -> dict[str, Any]:
    """Record a new event as ``POST /api/v1/events`` does; the event."""
    rt = runtime_of(app)
    event, created = record_event(rt.store, rt.registry, rt.settings, rt.publish, document)
    assert created
    return event


def drive_event(app: Flask, event_id: str, timeout: float = 10) -> dict[str, Any]:
    """Drive the event's job and each process it starts, in this process as workers
    would, until the event's job ends; that job, described."""
    rt = runtime_of(app)
    event = get_event(rt.store, event_id)
    assert event is not None, event_id
    deadline = time.monotonic() + timeout
    while True:
        rt.runner.drive(event["job_id"])
        job = rt.store.describe(event["job_id"])
        if job["status"] in TERMINAL or time.monotonic() > deadline:
            return job
        for child in rt.store.list_jobs()[0]:
            if child["status"] not in TERMINAL and child["id"] != event["job_id"]:
                rt.runner.drive(child["id"])
        time.sleep(0.01)
