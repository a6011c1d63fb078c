"""The built-in HTTP kinds against a real HTTP server on 127.0.0.1 (no mocked requests).

``http_get`` fetches a URL; ``wait_for_url`` looks at a status URL until its
JSON ``status`` is final. Jobs are submitted and driven exactly as a worker
does, on a real SQLite store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

import prodinf.kinds.http  # noqa: F401  (registers the built-in kinds)
from prodinf.config import Settings
from prodinf.engine.registry import Registry
from prodinf.engine.registry import registry as builtin
from prodinf.engine.runner import Runner
from prodinf.engine.service import Jobs
from prodinf.exceptions import ValidationError
from prodinf.store import JobRow, JobStore, StepRow, upgrade
from prodinf.store.types import utcnow
from tests.loopback import Loopback, Reply, Request, free_port

# -- a real HTTP server answering from a script -------------------------------------------


@dataclass
class Answer:
    status: int = 200
    body: bytes | dict[str, Any] | str = b""


class Site:
    """A loopback server that serves ``script`` in order (the last answer repeats) and
    records what it was asked: (target, Authorization header)."""

    def __init__(self) -> None:
        self.script: list[Answer] = [Answer(404, "not here")]
        self.lock = threading.Lock()
        self.loopback = Loopback(self.next)
        self.base_url = self.loopback.base

    def answer(self, *answers: Answer) -> None:
        with self.lock:
            self.script = list(answers)

    def next(self, request: Request) -> Reply:
        with self.lock:
            answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        html = "text/html" if isinstance(answer.body, str) else None
        return Reply(answer.status, answer.body, content_type=html)

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        return [(r.target, r.headers.get("Authorization")) for r in self.loopback.seen()]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    with s.loopback:
        yield s


# -- the engine around the kinds ---------------------------------------------------------


class World:
    def __init__(self, settings: Settings) -> None:
        self.store = JobStore(settings.store_url)
        upgrade(self.store)
        self.registry = Registry()
        for name in ("http_get", "wait_for_url"):
            self.registry.register(builtin.get(name))
        self.published: list[tuple[str, str]] = []
        self.jobs = Jobs(self.store, self.registry, settings, self.published_to)
        self.runner = Runner(self.store, self.registry, settings, self.published_to)

    def published_to(self, job_id: str, queue: str) -> None:
        self.published.append((job_id, queue))

    def submit(self, kind: str, **params: Any) -> str:
        summary, _ = self.jobs.submit(kind, params)
        return str(summary["id"])

    def drive(self, job_id: str) -> dict[str, Any]:
        self.runner.drive(job_id)
        return self.store.describe(job_id)

    def drive_until_done(self, job_id: str, limit: int = 20) -> dict[str, Any]:
        """Drive, letting each wait or backoff come due at once, until the job ends."""
        job = self.drive(job_id)
        for _ in range(limit):
            if job["status"] != "waiting":
                return job
            self.pass_time(job_id)
            job = self.drive(job_id)
        raise AssertionError(f"job still {job['status']} after {limit} drives")

    def pass_time(self, job_id: str) -> None:
        past = utcnow() - timedelta(seconds=1)
        with self.store.session() as session:
            session.execute(
                update(StepRow)
                .where(StepRow.job_id == job_id, StepRow.status == "waiting")
                .values(due_at=past)
            )
            session.execute(update(JobRow).where(JobRow.id == job_id).values(next_run_at=past))


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    w = World(settings)
    yield w
    w.store.dispose()


def events(job: dict[str, Any], event: str) -> list[str]:
    return [h["message"] for h in job["history"] if h["event"] == event]


# -- http_get ----------------------------------------------------------------------------


def test_http_get_reports_the_status_digest_and_size_of_what_was_served(
    world: World, site: Site
) -> None:
    # Given a server with 200 KB of bytes at a URL
    payload = os.urandom(200_000)
    site.answer(Answer(200, payload))

    # When an http_get job for it runs
    job = world.drive(world.submit("http_get", url=f"{site.base_url}/data.bin"))

    # Then its result describes exactly those bytes
    assert job["status"] == "succeeded"
    assert job["result"] == {
        "status_code": 200,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
    }
    assert [path for path, _ in site.requests] == ["/data.bin"]
    assert job["queue"] == "jobs"


def test_http_get_retries_a_server_error_then_fails(world: World, site: Site) -> None:
    """Given a server that keeps answering 500, when http_get runs, then it waits to retry,
    and fails after three attempts saying what the server answered.
    """
    site.answer(Answer(500, "boom"))
    job_id = world.submit("http_get", url=f"{site.base_url}/flaky")

    job = world.drive(job_id)
    assert job["status"] == "waiting"
    assert job["steps"][0]["waiting_for"].startswith("retry 2/3")

    job = world.drive_until_done(job_id)

    assert len(site.requests) == 3
    assert job["status"] == "failed"
    assert job["error"]["type"] == "RemoteUnavailable"
    assert job["error"]["message"] == f"{site.base_url}/flaky answered 500"
    assert len(events(job, "step.retrying")) == 2


def test_http_get_succeeds_when_the_server_recovers(world: World, site: Site) -> None:
    """Given a server that answers 503 once, then 200, when http_get runs to the end, then
    it succeeds with the digest of the body, after one retry.
    """
    site.answer(Answer(503, "busy"), Answer(200, b"hello"))

    job = world.drive_until_done(world.submit("http_get", url=f"{site.base_url}/x"))

    assert job["status"] == "succeeded"
    assert job["result"]["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert job["steps"][0]["attempts"] == 1


def test_http_get_fails_at_once_on_not_found(world: World, site: Site) -> None:
    """Given a server that answers 404, when http_get runs, then it fails at once,
    permanently, saying so.
    """
    site.answer(Answer(404, "no such file"))

    job = world.drive(world.submit("http_get", url=f"{site.base_url}/missing"))

    assert len(site.requests) == 1
    assert job["status"] == "failed"
    assert job["error"]["type"] == "PermanentError"
    assert job["error"]["message"] == f"{site.base_url}/missing answered 404"


def test_http_get_retries_when_nothing_listens(world: World) -> None:
    """Given a port nothing listens on, when http_get runs, then the step waits to retry,
    its error saying the connection failed.
    """
    port = free_port()

    job = world.drive(world.submit("http_get", url=f"http://127.0.0.1:{port}/", timeout=2))

    assert job["status"] == "waiting"
    assert job["steps"][0]["error"]["type"] == "RemoteUnavailable"
    assert job["steps"][0]["error"]["message"] == (
        f"GET http://127.0.0.1:{port}/ failed: ConnectionError"
    )


def test_http_get_sends_url_credentials_and_never_shows_the_password(
    world: World, site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a URL with credentials that the server refuses
    site.answer(Answer(404, "denied"))
    url = site.base_url.replace("://", "://reader:s3cr3t-pw@") + "/private"
    caplog.set_level(logging.DEBUG)

    # When http_get fetches it
    job = world.drive(world.submit("http_get", url=url))

    # Then the server got them as Basic auth, and the failed job and the log show
    # the URL with the password masked, never the password
    assert site.requests[0][1] == "Basic " + base64.b64encode(b"reader:s3cr3t-pw").decode()
    assert job["status"] == "failed"
    assert "s3cr3t-pw" not in json.dumps(job)
    assert "reader:***@" in job["error"]["message"]
    assert "s3cr3t-pw" not in caplog.text


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "params.url"),
        ({"url": "ftp://example.org/file"}, "params.url"),
        ({"url": "not a url"}, "params.url"),
        ({"url": "http://example.org", "timeout": 0}, "params.timeout"),
        ({"url": "http://example.org", "verb": "POST"}, "params.verb"),
    ],
)
def test_http_get_params_are_validated(world: World, params: dict[str, Any], field: str) -> None:
    """Given bad http_get params, when submitted, then the error names the field."""
    with pytest.raises(ValidationError) as caught:
        world.jobs.submit("http_get", params)

    assert caught.value.field == field


# -- wait_for_url ------------------------------------------------------------------------


def test_wait_for_url_waits_while_running_and_returns_the_final_document(
    world: World, site: Site
) -> None:
    # Given a status URL that says running, running, then complete
    final = {"status": "complete", "output": "s3://bucket/result.csv", "rows": 12}
    site.answer(
        Answer(200, {"status": "running"}), Answer(200, {"status": "running"}), Answer(200, final)
    )
    job_id = world.submit("wait_for_url", url=f"{site.base_url}/jobs/7", interval=60)

    # When first driven, the job waits for the interval, saying why
    job = world.drive(job_id)
    assert job["status"] == "waiting"
    assert job["steps"][0]["waiting_for"] == f"{site.base_url}/jobs/7 is running"
    assert job["next_run_at"] is not None

    # When driven each time the next look is due
    job = world.drive_until_done(job_id)

    # Then the result is the final document, after three looks
    assert job["status"] == "succeeded"
    assert job["result"] == final
    assert len(site.requests) == 3
    assert events(job, "step.waiting") == [f"{site.base_url}/jobs/7 is running"]


def test_wait_for_url_gives_up_after_max_errors_failed_looks(world: World, site: Site) -> None:
    """Given a status URL that answers 404, when wait_for_url runs with max_errors 3, then
    it fails after three looks, each failed look backing off.
    """
    site.answer(Answer(404, "gone"))
    url = f"{site.base_url}/jobs/8"

    job = world.drive_until_done(world.submit("wait_for_url", url=url, interval=60, max_errors=3))

    assert len(site.requests) == 3
    assert job["status"] == "failed"
    assert job["error"]["type"] == "PermanentError"
    assert job["error"]["message"] == f"gave up after 3 failed looks: {url} answered 404"
    assert events(job, "step.waiting") == [
        f"look 1 failed ({url} answered 404); next in 60s",
        f"look 2 failed ({url} answered 404); next in 120s",
    ]


def test_wait_for_url_counts_only_failed_looks_in_a_row(world: World, site: Site) -> None:
    """Given a status URL that fails twice, answers running, fails twice more, then gives
    a final status, when wait_for_url runs with max_errors 3, then it succeeds with that
    status: only failed looks in a row count.
    """
    site.answer(
        Answer(503, "busy"),
        Answer(200, "<html>maintenance</html>"),
        Answer(200, {"status": "running"}),
        Answer(502, "bad gateway"),
        Answer(500, "oops"),
        Answer(200, {"status": "failed", "error": "out of memory"}),
    )

    job = world.drive_until_done(
        world.submit("wait_for_url", url=f"{site.base_url}/s", interval=60, max_errors=3)
    )

    # a final status is a result, whatever it says: the caller decides what "failed" means
    assert job["status"] == "succeeded"
    assert job["result"] == {"status": "failed", "error": "out of memory"}
    assert len(site.requests) == 6
    assert any("did not answer a JSON object" in m for m in events(job, "step.waiting"))


def test_wait_for_url_fails_when_its_timeout_passes(world: World, site: Site) -> None:
    site.answer(Answer(200, {"status": "queued"}))
    job_id = world.submit("wait_for_url", url=f"{site.base_url}/q", interval=60, timeout=600)
    assert world.drive(job_id)["status"] == "waiting"

    # When it has waited longer than its timeout
    with world.store.session() as session:
        session.execute(
            update(StepRow)
            .where(StepRow.job_id == job_id)
            .values(first_attempt_at=utcnow() - timedelta(seconds=601))
        )
    world.pass_time(job_id)
    job = world.drive(job_id)

    assert job["status"] == "failed"
    assert (
        job["error"]["message"] == f"wait gave up after 600s waiting: {site.base_url}/q is queued"
    )
