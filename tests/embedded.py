"""A prodinf on embedded defaults, as a test works it: jobs submitted through a portal's
runtime and driven in this process as a worker would, and the run messages waiting in
kombu's filesystem broker under ``<home>/broker/queues``, read back as they are on disk."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from flask import Flask

from prodinf.runtime import Runtime

__all__ = ["messages", "run", "runtime_of", "submit"]


def runtime_of(app: Flask) -> Runtime:
    """The runtime a portal made by ``create_app`` works with."""
    runtime: Runtime = app.extensions["prodinf"]
    return runtime


def submit(app: Flask, kind: str, params: dict[str, Any], **kw: Any) -> str:
    """Submit a new job through the portal's runtime; its id."""
    job, created = runtime_of(app).jobs.submit(kind, params, **kw)
    assert created
    job_id: str = job["id"]
    return job_id


def run(app: Flask, kind: str, params: dict[str, Any], **kw: Any) -> str:
    """Submit a job and drive it in this process until it waits or ends; its id."""
    job_id = submit(app, kind, params, **kw)
    runtime_of(app).runner.drive(job_id)
    return job_id


def messages(home: Path) -> list[dict[str, Any]]:
    """The run messages waiting in the embedded broker, oldest first: each one's task,
    arguments (a job id: messages carry nothing else) and file name."""
    found = []
    for path in sorted((home / "broker" / "queues").glob("*.msg")):
        message = json.loads(path.read_text())
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        found.append({"task": message["headers"]["task"], "args": args, "file": path.name})
    return found
