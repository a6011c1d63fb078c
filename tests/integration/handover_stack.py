"""A prodinf that hands databases over, as its integration tests run it: RabbitMQ +
PostgreSQL, a real worker per queue (handover, jobs, event, email), mail to a real
SMTP server (aiosmtpd), and a staging server of its own (a second MariaDB or
PostgreSQL started for the tests: ``tests/staging_servers.py``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.kinds.handover.report import handover_detail
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.status import HandoverStatus
from tests.conftest import Processes
from tests.gates import skip_or_fail
from tests.integration.conftest import delete_queues, stack_settings
from tests.integration.servers import Smtp
from tests.staging_servers import Unavailable, staging_mariadb, staging_postgres
from tests.waiting import wait_until

__all__ = [
    "ALL",
    "PUBLIC",
    "HandoverStack",
    "handover_config",
    "staging_server",
    "start_stack",
]

PUBLIC = "https://prodinf.example.org"
#: The stages of every type unless a test says otherwise.
ALL = {"healthcheck": {"params": {"groups": ["generic"]}}, "copy": {}, "metadata": {}, "events": {}}


def staging_server(engine: str) -> Iterator[str]:
    """A second server of ``engine`` (mariadb or postgresql) for a test module: its URL."""
    folder = Path(tempfile.mkdtemp(prefix=f"prodinf-staging-{engine}-"))
    folder.chmod(0o755)  # the server runs as its own system user
    start = staging_mariadb if engine == "mariadb" else staging_postgres
    try:
        with start(folder / "server") as url:
            yield url
    except Unavailable as exc:
        skip_or_fail(f"no second {engine} server for staging: {exc}", "install the server")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def handover_config(
    folder: Path,
    staging: str,
    *,
    stages: dict[str, Any] | None = None,
    window: dict[str, str] | None = None,
    extra_types: dict[str, Any] | None = None,
) -> Path:
    """A handover configuration accepting core databases (``window``, open by default),
    running ``stages`` (all four by default), staged on ``staging``."""
    document = {
        "release_key": "schema_version",
        "types": {
            "core": {
                "window": {"opens": "2026-01-01T00:00:00Z"} if window is None else window,
                "stages": stages or ALL,
            },
            **(extra_types or {}),
        },
        "staging": [{"name": "staging", "server": staging}],
    }
    path = folder / "handover.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class HandoverStack:
    """The runtime, a portal client, the workers and the mail of one test."""

    def __init__(self, rt: Runtime, processes: Processes, smtp: Smtp | None) -> None:
        self.rt = rt
        self.processes = processes
        self.smtp = smtp
        self.app = create_app(rt.settings)
        self.client = self.app.test_client()
        self.workers: dict[str, Any] = {}

    def worker(self, queue: str, settings: Settings | None = None, **kw: Any) -> Any:
        modules = {
            "handover": "prodinf.handover_tasks",
            "event": "prodinf.event_tasks",
            "email": "prodinf.email_tasks",
            "jobs": "prodinf.worker",
        }
        settings = settings or self.rt.settings
        proc = self.processes.worker(
            settings,
            queues=settings.queue_for(queue),
            module=modules[queue],
            name=queue,
            **kw,
        )
        self.workers[queue] = proc
        return proc

    def submit(self, src_uri: str, **extra: Any) -> Any:
        body = {"src_uri": src_uri, "contact": "ada@example.org", "comment": "new build"}
        return self.client.post("/api/v1/handovers", json={**body, **extra})

    def handover(self, token: str) -> dict[str, Any]:
        answer = self.client.get(f"/api/v1/handovers/{token}")
        assert answer.status_code == 200, answer.json
        found: dict[str, Any] = answer.json
        return found

    def wait(self, token: str, timeout: float = 180) -> dict[str, Any]:
        """Wait until handover ``token`` has ended; its API document."""

        def ended() -> dict[str, Any] | None:
            found = handover_detail(self.rt.store, token)
            return (
                found
                if found["status"] not in (HandoverStatus.QUEUED, HandoverStatus.RUNNING)
                else None
            )

        wait_until(ended, timeout, f"handover {token} to end", 0.2, self.processes.logs)
        return self.handover(token)

    def mails(self, count: int, timeout: float = 60) -> list[Any]:
        assert self.smtp is not None
        smtp = self.smtp
        wait_until(lambda: smtp.inbox.count() >= count, timeout, f"{count} mail(s)", 0.2)
        return list(smtp.inbox.messages)


def start_stack(
    request: pytest.FixtureRequest,
    home: Path,
    processes: Processes,
    config: Path,
    smtp: Smtp | None,
    *,
    queues: tuple[str, ...] = ("handover", "jobs", "event", "email"),
    **overrides: Any,
) -> Iterator[HandoverStack]:
    """RabbitMQ + PostgreSQL with a worker on each of ``queues``; no subscriptions (the
    handover's events are recorded and end at once), mail to ``smtp``."""
    subscriptions = config.parent / "subscriptions.yaml"
    subscriptions.write_text("subscriptions: []\n")
    values: dict[str, Any] = {
        "handover_config": config,
        "subscriptions": subscriptions,
        "release": 115,
        "public_url": PUBLIC,
        **overrides,
    }
    if smtp is not None:
        values.update(smtp_host="127.0.0.1", smtp_port=smtp.port)
    settings: Settings = stack_settings(home, "servers", request, **values)
    rt = Runtime(settings, create_celery(settings))
    stack = HandoverStack(rt, processes, smtp)
    for queue in queues:
        stack.worker(queue)
    try:
        yield stack
    finally:
        processes.stop_all()
        rt.close()
        delete_queues(settings)


def environment(**values: str) -> dict[str, str]:
    """``os.environ`` with ``values`` set (for a worker's environment)."""
    return {**os.environ, **values}
