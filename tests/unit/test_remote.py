"""Tests for prodinf.remote against a real HTTP server on 127.0.0.1 (no mocked requests)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import tests.loopback as loopback
from prodinf.exceptions import (
    Conflict,
    NotFound,
    PermanentError,
    RemoteUnavailable,
    ValidationError,
)
from prodinf.remote import (
    PENDING_STATUSES,
    RemoteJob,
    RemoteJobClient,
    fetch_status,
    is_pending,
)

# -- a scripted HTTP server --------------------------------------------------------------


@dataclass
class Reply:
    """One scripted answer: ``body`` dict/list is sent as JSON, str/bytes as-is."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeService:
    """A real HTTP server on loopback answering from a script; the last reply repeats."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: list[Reply] = [Reply(404, {"message": "no script", "field": None})]
        self.seen: list[Seen] = []
        self._loopback = loopback.Loopback(self._answer).start()
        self.base_url = self._loopback.base

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script = list(replies)

    def next_reply(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
            return self._script.pop(0) if len(self._script) > 1 else self._script[0]

    def _answer(self, request: loopback.Request) -> loopback.Reply:
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = request.body
        reply = self.next_reply(Seen(request.method, request.target, request.headers, body))
        if reply.delay:
            self._loopback.pause(reply.delay)  # cut short when the server closes
        html = "text/html" if isinstance(reply.body, str) else None
        return loopback.Reply(reply.status, reply.body, reply.headers, content_type=html)

    def close(self) -> None:
        self._loopback.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def service() -> Iterator[FakeService]:
    svc = FakeService()
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on: connecting is refused."""
    return loopback.free_port()


def make_client(base_url: str, **kw: Any) -> RemoteJobClient:
    options: dict[str, Any] = {"timeout": 2.0, "retries": 2, "backoff": 0.01, "deadline": 5.0}
    options.update(kw)
    return RemoteJobClient(base_url, **options)


def job_doc(status: str, job_id: str = "j1", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": job_id,
        "kind": "echo",
        "status": status,
        "progress": 0,
        "steps": [],
        "result": None,
        "error": None,
        "history": [],
    }
    doc.update(extra)
    return doc


# -- statuses ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [*sorted(PENDING_STATUSES), "RUNNING", " queued "])
def test_pending_statuses_mean_keep_waiting(status: str) -> None:
    """Given a pending status, in any case or with spaces, then it means keep waiting."""
    assert is_pending(status)


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled", "reverted", "", None])
def test_any_other_status_means_done(status: str | None) -> None:
    """Given any other status, or none, then the job is done."""
    assert not is_pending(status)


def test_remote_job_finished_and_succeeded() -> None:
    """Given remote jobs in several statuses, then finished and succeeded say which ended,
    and which ended well.
    """

    def job(status: str) -> RemoteJob:
        return RemoteJob("1", "http://h/api/v1/jobs/1", status, {})

    assert not job("running").finished
    assert job("succeeded").finished and job("succeeded").succeeded
    assert job("completed").succeeded and job("done").succeeded
    assert job("failed").finished and not job("failed").succeeded


# -- submit ------------------------------------------------------------------------------


def test_submit_returns_the_job_and_sends_the_request(service: FakeService) -> None:
    """Given a service that accepts a job, when the client submits one, then it gets the
    job, and the service got the kind, params and idempotency key as JSON.
    """
    service.script(Reply(201, {"id": "j1", "url": "/api/v1/jobs/j1", "status": "queued"}))
    with make_client(service.base_url) as client:
        job = client.submit("echo", {"n": 1}, idempotency_key="key-1")

    assert job.id == "j1"
    assert job.url == f"{service.base_url}/api/v1/jobs/j1"
    assert job.status == "queued" and not job.finished
    [request] = service.seen
    assert (request.method, request.path) == ("POST", "/api/v1/jobs")
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == {"kind": "echo", "params": {"n": 1}, "idempotency_key": "key-1"}


def test_submit_accepts_200_for_an_existing_job(service: FakeService) -> None:
    """Given a service that answers 200 with an existing job, when the client submits,
    then it gets that job, at the URL the service gave.
    """
    existing = {"id": "j7", "url": "http://jobs.example.org/api/v1/jobs/j7", "status": "running"}
    service.script(Reply(200, existing))
    with make_client(service.base_url) as client:
        job = client.submit("echo", {}, idempotency_key="key-7")
    assert (job.id, job.status) == ("j7", "running")
    assert job.url == "http://jobs.example.org/api/v1/jobs/j7"  # absolute URL kept as given


def test_submit_retries_503_then_succeeds(service: FakeService) -> None:
    """Given a service busy twice, then accepting, when the client submits, then it retries
    and gets the job.
    """
    busy = Reply(503, {"message": "busy", "field": None})
    service.script(
        busy, busy, Reply(201, {"id": "j1", "url": "/api/v1/jobs/j1", "status": "queued"})
    )
    with make_client(service.base_url, retries=3) as client:
        job = client.submit("echo", {"n": 1})

    assert job.id == "j1"
    assert len(service.seen) == 3
    # Without a caller's key one is generated, and every retry carries the same one.
    keys = {request.body["idempotency_key"] for request in service.seen}
    assert len(keys) == 1 and all(keys)


def test_persistent_500_raises_remote_unavailable_after_the_retries(
    service: FakeService,
) -> None:
    """Given a service that keeps answering 500, when the client asks, then it retries,
    then raises RemoteUnavailable quoting the service.
    """
    service.script(Reply(500, {"message": "database exploded", "field": None}))
    with (
        make_client(service.base_url, retries=2) as client,
        pytest.raises(RemoteUnavailable) as err,
    ):
        client.submit("echo", {})
    assert len(service.seen) == 3  # the first attempt and 2 retries
    assert "500" in str(err.value) and "database exploded" in str(err.value)


def test_a_hanging_server_raises_within_about_the_deadline(service: FakeService) -> None:
    # Given a server that answers only after 10 s, and a client that gives each attempt
    # 0.2 s, may retry 50 times, but must be done within 0.8 s
    service.script(Reply(200, {"id": "j1", "status": "running"}, delay=10))
    client = make_client(service.base_url, timeout=0.2, retries=50, backoff=0.01, deadline=0.8)

    # When it asks for a job, then it gives up
    with client, pytest.raises(RemoteUnavailable):
        client.get("j1")

    # after retrying the read timeouts, but only as many as fit in the deadline (each
    # waits 0.2 s, and none starts after 0.8 s): not 51
    assert 2 <= len(service.seen) <= 5


def test_a_retry_after_beyond_the_deadline_gives_up_at_once(service: FakeService) -> None:
    """Given a 503 asking to come back in an hour, beyond the call's deadline, when the
    client asks, then it gives up at once, after one request, keeping the Retry-After.
    """
    service.script(Reply(503, {"message": "maintenance", "field": None}, {"Retry-After": "3600"}))
    started = time.monotonic()
    with (
        make_client(service.base_url, retries=3) as client,
        pytest.raises(RemoteUnavailable) as err,
    ):
        client.get("j1")
    assert time.monotonic() - started < 3.0
    assert err.value.retry_after == 3600.0 and "maintenance" in str(err.value)
    assert len(service.seen) == 1


def test_connection_refused_raises_remote_unavailable(closed_port: int) -> None:
    """Given a port nothing listens on, when the client submits or fetches, then it raises
    RemoteUnavailable, never showing the password in its URL.
    """
    with make_client(f"http://127.0.0.1:{closed_port}") as client:
        with pytest.raises(RemoteUnavailable):
            client.submit("echo", {})
        with pytest.raises(RemoteUnavailable):
            client.get("j1")


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, ValidationError), (422, ValidationError), (403, PermanentError), (409, Conflict)],
)
def test_4xx_raises_a_permanent_error_with_the_field_and_is_not_retried(
    service: FakeService, status: int, error: type[PermanentError]
) -> None:
    """Given a service that refuses the request with a 4xx naming a field, then the client
    raises the matching permanent error with that field, after one request.
    """
    service.script(Reply(status, {"message": "n must be an integer", "field": "params.n"}))
    with make_client(service.base_url, retries=3) as client, pytest.raises(error) as err:
        client.submit("echo", {"n": "x"})
    assert isinstance(err.value, PermanentError) and not isinstance(err.value, NotFound)
    assert err.value.field == "params.n"
    assert "n must be an integer" in str(err.value)
    assert err.value.details["remote_message"] == "n must be an integer"
    assert err.value.details["status_code"] == status
    assert len(service.seen) == 1


def test_404_raises_not_found(service: FakeService) -> None:
    """Given a job the service does not have, when the client gets it, then NotFound."""
    service.script(Reply(404, {"message": "no job 'nope'", "field": None}))
    with make_client(service.base_url) as client, pytest.raises(NotFound) as err:
        client.get("nope")
    assert service.seen[0].path == "/api/v1/jobs/nope"
    assert "no job 'nope'" in str(err.value)
    assert len(service.seen) == 1


def test_429_is_transient_but_not_retried_in_the_call(service: FakeService) -> None:
    """Given a 429 with Retry-After, then the error is transient and keeps the Retry-After,
    and the call does not retry it itself.
    """
    service.script(Reply(429, {"message": "slow down", "field": None}, {"Retry-After": "7"}))
    with (
        make_client(service.base_url, retries=3) as client,
        pytest.raises(RemoteUnavailable) as err,
    ):
        client.get("j1")
    assert err.value.retry_after == 7.0
    assert len(service.seen) == 1


def test_a_4xx_without_json_still_reports_the_body(service: FakeService) -> None:
    """Given a 4xx page from a proxy, not JSON, then the error still says what it said."""
    service.script(Reply(403, "<h1>Forbidden by proxy</h1>"))
    with make_client(service.base_url) as client, pytest.raises(PermanentError) as err:
        client.get("j1")
    assert "Forbidden by proxy" in str(err.value) and err.value.field is None


def test_a_2xx_that_is_not_a_job_is_a_permanent_error(service: FakeService) -> None:
    """Given a 200 that is not a job document, then it is a permanent error."""
    service.script(Reply(200, "<html>maintenance</html>"))
    with make_client(service.base_url) as client, pytest.raises(PermanentError):
        client.get("j1")


def test_params_that_are_not_json_are_rejected_before_sending(service: FakeService) -> None:
    """Given params that cannot be JSON, when submitted, then the error names params and
    nothing is sent.
    """
    with make_client(service.base_url) as client, pytest.raises(ValidationError) as err:
        client.submit("echo", {"when": object()})
    assert err.value.field == "params"
    assert service.seen == []


# -- get and wait ------------------------------------------------------------------------


def test_get_by_id_and_by_url(service: FakeService) -> None:
    """Given a job, when the client gets it by id, by path and by full URL, then each is the
    same job, asked for at the same path.
    """
    service.script(Reply(200, job_doc("running", progress=40)))
    with make_client(service.base_url) as client:
        by_id = client.get("j1")
        by_path = client.get("/api/v1/jobs/j1")
        by_url = client.get(f"{service.base_url}/api/v1/jobs/j1")
    assert [request.path for request in service.seen] == ["/api/v1/jobs/j1"] * 3
    assert by_id == by_path == by_url
    assert by_id.url == f"{service.base_url}/api/v1/jobs/j1"
    assert by_id.status == "running" and by_id.document["progress"] == 40


def test_wait_follows_queued_running_succeeded(service: FakeService) -> None:
    """Given a job that goes queued, running, succeeded, when the client waits on it, then
    it returns it succeeded, having looked at each status.
    """
    service.script(
        Reply(201, {"id": "j1", "url": "/api/v1/jobs/j1", "status": "queued"}),
        Reply(200, job_doc("queued")),
        Reply(200, job_doc("running")),
        Reply(200, job_doc("succeeded", result={"answer": 42})),
    )
    with make_client(service.base_url) as client:
        job = client.wait(client.submit("echo", {}), interval=0.01, deadline=5)
    assert job.finished and job.succeeded
    assert job.document["result"] == {"answer": 42}
    assert [request.method for request in service.seen] == ["POST", "GET", "GET", "GET"]


def test_wait_returns_a_failed_job_without_raising(service: FakeService) -> None:
    """Given a job that fails, when the client waits on it, then it returns it failed."""
    service.script(Reply(200, job_doc("running")), Reply(200, job_doc("failed", error="boom")))
    with make_client(service.base_url) as client:
        job = client.wait("j1", interval=0.01, deadline=5)
    assert job.finished and not job.succeeded and job.document["error"] == "boom"


def test_wait_rides_out_a_transient_failure(service: FakeService) -> None:
    """Given a service that answers 503 once while a job runs, when the client waits, then
    it keeps waiting and returns the job.
    """
    service.script(
        Reply(503, {"message": "restarting", "field": None}), Reply(200, job_doc("done"))
    )
    with make_client(service.base_url, retries=0) as client:
        job = client.wait("j1", interval=0.01, deadline=5)
    assert job.succeeded
    assert len(service.seen) == 2


def test_wait_raises_remote_unavailable_when_the_deadline_passes(service: FakeService) -> None:
    """Given a job that keeps running, when the client waits with a deadline, then it
    raises RemoteUnavailable saying the job was still running.
    """
    service.script(Reply(200, job_doc("running")))
    with make_client(service.base_url) as client, pytest.raises(RemoteUnavailable) as err:
        client.wait("j1", interval=0.05, deadline=0.3)
    assert "running" in str(err.value)


# -- fetch_status ------------------------------------------------------------------------


def test_fetch_status_returns_the_json_document(service: FakeService) -> None:
    """Given a status URL answering JSON, then fetch_status returns the code and document."""
    service.script(Reply(200, {"status": "incomplete", "done": 3}))
    assert fetch_status(f"{service.base_url}/status", timeout=2) == (
        200,
        {"status": "incomplete", "done": 3},
    )


@pytest.mark.parametrize("body", ["<html>not json</html>", [1, 2], b""])
def test_fetch_status_returns_none_for_a_body_that_is_not_a_json_object(
    service: FakeService, body: Any
) -> None:
    """Given a body that is not a JSON object, then fetch_status returns no document."""
    service.script(Reply(200, body))
    assert fetch_status(f"{service.base_url}/status", timeout=2) == (200, None)


def test_fetch_status_returns_error_statuses_without_retrying(service: FakeService) -> None:
    """Given a status URL answering 404, then fetch_status returns it, after one request."""
    service.script(Reply(404, {"message": "gone", "field": None}))
    assert fetch_status(f"{service.base_url}/status", timeout=2) == (
        404,
        {"message": "gone", "field": None},
    )
    service.script(Reply(503, "busy"))
    assert fetch_status(f"{service.base_url}/status", timeout=2) == (503, None)
    assert len(service.seen) == 2


def test_fetch_status_raises_remote_unavailable_when_unreachable(
    service: FakeService, closed_port: int
) -> None:
    """Given a status URL nothing answers at, then fetch_status raises RemoteUnavailable."""
    with pytest.raises(RemoteUnavailable):
        fetch_status(f"http://127.0.0.1:{closed_port}/status", timeout=2)
    service.script(Reply(200, {"status": "done"}, delay=10))
    with pytest.raises(RemoteUnavailable):
        fetch_status(f"{service.base_url}/status", timeout=0.2)


# -- credentials -------------------------------------------------------------------------


def test_credentials_are_masked_in_errors(service: FakeService, closed_port: int) -> None:
    """Given URLs with a password, when calls fail (refused, unreachable, rejected), then
    no error shows the password, and they show the user with ***.
    """
    with make_client(f"http://alice:s3cret@127.0.0.1:{closed_port}") as client:
        with pytest.raises(RemoteUnavailable) as down:
            client.submit("echo", {})
        assert "s3cret" not in client.base_url and "s3cret" not in repr(client)
    with pytest.raises(RemoteUnavailable) as one_shot:
        fetch_status(f"http://alice:s3cret@127.0.0.1:{closed_port}/status", timeout=1)

    service.script(Reply(400, {"message": "bad kind", "field": "kind"}))
    creds_url = service.base_url.replace("http://", "http://alice:s3cret@")
    with make_client(creds_url) as client, pytest.raises(ValidationError) as rejected:
        client.get(f"{creds_url}/api/v1/jobs/j1")

    for err in (down.value, one_shot.value, rejected.value):
        assert "s3cret" not in str(err) and "s3cret" not in repr(err.to_dict())
    assert "alice:***@" in str(one_shot.value) and "alice:***@" in str(rejected.value)


def test_base_url_credentials_are_sent_to_that_host_only(service: FakeService) -> None:
    """Given a base URL with credentials, and a job the service says lives on another
    host, then the credentials go to the service only, never to the other host.
    """
    other = FakeService()
    try:
        other.script(Reply(200, job_doc("running")))
        elsewhere = f"{other.base_url}/api/v1/jobs/j1"
        service.script(
            Reply(201, {"id": "j1", "url": "/api/v1/jobs/j1", "status": "queued"}),
            Reply(201, {"id": "j1", "url": elsewhere, "status": "queued"}),
        )
        creds_url = service.base_url.replace("http://", "http://alice:s3cret@")
        with make_client(creds_url) as client:
            here = client.submit("echo", {})
            there = client.submit("echo", {})
            client.get(there.url)
    finally:
        other.close()

    expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert [request.headers.get("Authorization") for request in service.seen] == [expected] * 2
    assert "Authorization" not in other.seen[0].headers
    assert "s3cret" not in here.url and here.url == f"{service.base_url}/api/v1/jobs/j1"


def test_credentials_a_service_quotes_back_are_masked(service: FakeService) -> None:
    """Given a client with a password in its base URL and a token in a header, and a
    service that quotes both back (bare and as sent) in its refusal and in a job's
    document, then neither the error nor the document shows them."""
    basic = base64.b64encode(b"alice:s3cret-pw").decode()
    said = f"token tok-3f9a1c for alice:s3cret-pw (Authorization: Basic {basic})"
    service.script(Reply(422, {"message": f"refused {said}", "field": "params"}))
    creds_url = service.base_url.replace("http://", "http://alice:s3cret-pw@")
    headers = {"X-Peer-Token": "tok-3f9a1c"}
    with make_client(creds_url, headers=headers, secrets=["tok-3f9a1c"]) as client:
        with pytest.raises(ValidationError) as refused:
            client.submit("echo", {})
        service.script(Reply(200, job_doc("failed", error={"message": said}, echo=said)))
        job = client.get("j1")

    assert service.seen[0].headers["X-Peer-Token"] == "tok-3f9a1c"  # sent, never shown
    shown = [str(refused.value), repr(refused.value.to_dict()), json.dumps(job.document)]
    for text in shown:
        assert "tok-3f9a1c" not in text and "s3cret" not in text and basic[:20] not in text
    assert "token *** for alice:***" in shown[0]


def test_fetch_status_masks_the_credentials_its_document_quotes(service: FakeService) -> None:
    """Given a status URL with a password, answering a document that quotes the login it
    was sent, then fetch_status returns the document without it."""
    basic = base64.b64encode(b"bob:s3cret-pw").decode()
    said = f"login bob:s3cret-pw, header Basic {basic}"
    service.script(Reply(200, {"status": "failed", "said": said}))
    url = service.base_url.replace("http://", "http://bob:s3cret-pw@") + "/status"

    code, document = fetch_status(url, timeout=2)

    assert code == 200 and document is not None and document["status"] == "failed"
    assert "s3cret" not in json.dumps(document) and basic[:20] not in json.dumps(document)
