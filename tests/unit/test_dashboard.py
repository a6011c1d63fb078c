"""``/dashboard``: queues, workers, what runs now, the last hour, failures, handovers.

Given the portal on embedded defaults with jobs put in their states for real (driven in
this process: some succeed, one fails, one is queued, one is running while the page is
asked for) and a worker that has said it runs; when the dashboard is opened, then it
shows each of them, and it is live.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from prodinf import Flow, Step, job_kind
from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.engine.registry import Registry
from prodinf.exceptions import PermanentError
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.store import upgrade, workers
from prodinf.store.types import utcnow
from tests.pages import page, text_of

#: What the dashboard showed while the ``peek`` job's step ran.
SEEN: list[str] = []


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    kinds = Registry()
    made: dict[str, Flask] = {}

    @job_kind("ok", into=kinds, queue="jobs")
    def ok(params: Any) -> Flow:
        return Flow.of(Step("work", lambda ctx: 1))

    def broken(ctx: Any) -> None:
        raise PermanentError("the input is bad")

    @job_kind("broken", into=kinds, queue="jobs")
    def broken_kind(params: Any) -> Flow:
        return Flow.of(Step("work", broken))

    def peek(ctx: Any) -> int:  # while this runs, the dashboard says so
        SEEN.append(page(made["app"].test_client(), "/dashboard"))
        return 1

    @job_kind("peek", into=kinds, queue="jobs")
    def peek_kind(params: Any) -> Flow:
        return Flow.of(Step("look", peek))

    runtime = Runtime(settings, create_celery(settings), kinds)
    made["app"] = create_app(settings, runtime=runtime)
    upgrade(runtime.store)
    yield made["app"]
    runtime.close()


def test_the_dashboard_shows_queues_workers_the_last_hour_and_failures(app: Flask) -> None:
    rt: Runtime = app.extensions["prodinf"]
    for _ in range(3):
        done, _ = rt.jobs.submit("ok", {})
        rt.runner.drive(done["id"])
    failed, _ = rt.jobs.submit("broken", {})
    rt.runner.drive(failed["id"])
    queued, _ = rt.jobs.submit("ok", {})
    workers.seen(rt.store, "email@host-a", ["email", "email.due"], 4242, utcnow())
    SEEN.clear()
    peeking, _ = rt.jobs.submit("peek", {})
    rt.runner.drive(peeking["id"])

    html = page(app.test_client(), "/dashboard")

    # queues: the jobs queue has a job waiting and no worker, the email queue its worker
    jobs_row = text_of(html, "queue-jobs")
    assert "none waiting" in jobs_row, jobs_row  # no worker; its oldest job waits
    assert text_of(html, "queue-email").split()[-3:] == ["1", "none", "queued"]
    assert "email@host-a" in text_of(html, "workers")
    # the last hour: 5 jobs ended (4 succeeded with the peek job, one failed), as bars
    said = text_of(html, "last-hour")
    assert "4 succeeded" in said and "1 failed" in said, said  # the peek job too
    assert html.count('class="bar bar-succeeded"') >= 1
    assert 'class="bar bar-failed"' in html
    # the latest failure, linked; the jobs by status
    failures = text_of(html, "failures")
    assert failed["id"][:8] in failures and "the input is bad" in failures
    assert f'href="/jobs/{failed["id"]}"' in html
    assert text_of(html, "status-queued").endswith("1")
    assert text_of(html, "status-failed").endswith("1")
    # live
    assert '<meta name="prodinf-live"' in html
    # while the peek job ran, the dashboard listed its step as running now
    assert SEEN and peeking["id"][:8] in text_of(SEEN[0], "running")
    assert queued["id"]


def test_the_dashboard_is_for_viewers(home: Any) -> None:
    """With authentication on, the dashboard asks for a login (it reads everything)."""
    app = create_app(Settings(home=home, auth="users"))
    try:
        upgrade(app.extensions["prodinf"].store)
        answer = app.test_client().get("/dashboard")
        assert answer.status_code == 302 and "/login" in answer.headers["Location"]
    finally:
        app.extensions["prodinf"].close()
