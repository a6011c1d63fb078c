"""``HttpJobs`` against a real HTTP server on loopback that speaks another vocabulary
(``incomplete``/``running``/``complete``/``failed``, its job id under ``job.ref``) and
checks the token it is sent."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest

from prodinf.exceptions import PermanentError, ProdinfError, RemoteUnavailable, ValidationError
from prodinf.remote.http_service import HttpJobs, RemoteStatus
from prodinf.remote.services import HttpService
from prodinf.status import StepStatus
from tests.loopback import Loopback, Reply, Request, free_port

TOKEN = "tok-Zq9x-never-shown"
PASSWORD = "pw-Kd7-never-shown"


class DataCheck:
    """A job service of its own words. ``POST /api/runs`` takes a job (the token in
    ``X-Api-Key`` or a 401 that echoes what it got); ``GET /api/runs/<ref>`` answers
    the next of ``states`` (the last one repeats). A test may set ``reply`` to answer
    every request with it instead."""

    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = [{"state": "incomplete"}]
        self.reply: Reply | None = None
        self.hang = 0.0
        self.server = Loopback(self.answer)

    def answer(self, request: Request) -> Reply:
        if self.hang:
            self.server.pause(self.hang)
        if request.headers.get("X-Api-Key") != TOKEN:
            return Reply(401, {"message": f"bad key; you sent {request.headers}"})
        if self.reply is not None:
            return self.reply
        if (request.method, request.path) == ("POST", "/api/runs"):
            return Reply(201, {"job": {"ref": "dc-1", "queued": True}})
        if (request.method, request.path) == ("GET", "/api/runs/dc-1"):
            return Reply(200, self.states.pop(0) if len(self.states) > 1 else self.states[0])
        return Reply(404, {"message": "no such run"})


@pytest.fixture
def datacheck() -> Iterator[DataCheck]:
    service = DataCheck()
    with service.server:
        yield service


def config(base: str, **change: Any) -> HttpService:
    return HttpService.model_validate(
        {
            "name": "datacheck",
            "type": "http",
            "url": base + "/api",
            "token_env": "DATACHECK_TEST_TOKEN",
            "auth_header": "X-Api-Key",
            "auth_scheme": "",
            "timeout": 5,
            "submit": {
                "path": "/runs",
                "body": {"db": "{{ params.database }}", "request": "{{ key }}", "n": 3},
            },
            "job_id": "/job/ref",
            "status_url": "/runs/{{ job_id }}",
            "status": "/state",
            "pending": ["incomplete", "running"],
            "succeeded": ["complete"],
            "failed": ["failed"],
            "result": "/output",
            "message": "/error",
            **change,
        }
    )


@pytest.fixture
def jobs(datacheck: DataCheck, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpJobs]:
    monkeypatch.setenv("DATACHECK_TEST_TOKEN", TOKEN)
    with HttpJobs(config(datacheck.server.base)) as adapter:
        yield adapter


PARAMS = {"database": "mysql://ro@staging:3306/homo_sapiens_core_115_38"}


def test_a_job_is_submitted_and_followed_to_success_in_the_services_words(
    datacheck: DataCheck, jobs: HttpJobs
) -> None:
    # Given a service that says incomplete, then running, then complete with an output
    datacheck.states = [
        {"state": "incomplete"},
        {"state": "running"},
        {"state": "complete", "output": {"rows": 3}},
    ]

    # When a job is submitted and its status read three times
    job_id = jobs.submit(PARAMS, key="event-7/check")
    seen = [jobs.status(job_id, PARAMS) for _ in range(3)]

    # Then the id came from job.ref, the body was rendered and the token sent as the key
    assert job_id == "dc-1"
    post = datacheck.server.seen("/api/runs")[0]
    assert post.json() == {"db": PARAMS["database"], "request": "event-7/check", "n": 3}
    assert post.headers["X-Api-Key"] == TOKEN
    assert post.headers["Content-Type"] == "application/json"
    # And its words became states, the last with the output as the result
    url = datacheck.server.url("/api/runs/dc-1")
    assert seen == [
        RemoteStatus(StepStatus.PENDING, "incomplete", None, None, url),
        RemoteStatus(StepStatus.PENDING, "running", None, None, url),
        RemoteStatus(StepStatus.SUCCEEDED, "complete", {"rows": 3}, None, url),
    ]


def test_a_failed_job_comes_with_the_services_message(datacheck: DataCheck, jobs: HttpJobs) -> None:
    datacheck.states = [{"state": "failed", "error": "table meta is missing", "output": {"n": 0}}]

    found = jobs.status("dc-1", PARAMS)

    assert (found.state, found.status) == (StepStatus.FAILED, "failed")
    assert found.message == "table meta is missing"
    assert found.result == {"n": 0}


def test_an_unknown_status_is_an_error_listing_the_known_ones(
    datacheck: DataCheck, jobs: HttpJobs
) -> None:
    datacheck.states = [{"state": "Complete"}]  # matched exactly: not "complete"

    with pytest.raises(PermanentError) as caught:
        jobs.status("dc-1", PARAMS)

    assert caught.value.message == (
        "unknown status 'Complete' from service 'datacheck' (pending: ['incomplete', "
        "'running'], succeeded: ['complete'], failed: ['failed'])"
    )


def test_a_pointer_that_finds_nothing_is_named(datacheck: DataCheck, jobs: HttpJobs) -> None:
    datacheck.reply = Reply(201, {"id": "dc-1"})
    with pytest.raises(PermanentError, match="no job id at '/job/ref' in the answer of POST"):
        jobs.submit(PARAMS, key="k")

    datacheck.reply = None
    datacheck.states = [{"state": "complete"}]
    with pytest.raises(PermanentError, match="no result at '/output'") as caught:
        jobs.status("dc-1", PARAMS)
    assert caught.value.field == "result"

    datacheck.reply = Reply(201, {"job": {"ref": ["a"]}})
    with pytest.raises(PermanentError, match="is '\\[\"a\"\\]', not a string or number"):
        jobs.submit(PARAMS, key="k")


def test_an_answer_that_is_not_json_is_an_error(datacheck: DataCheck, jobs: HttpJobs) -> None:
    datacheck.reply = Reply(200, "<html>maintenance</html>")

    with pytest.raises(PermanentError) as caught:
        jobs.status("dc-1", PARAMS)

    assert not isinstance(caught.value, RemoteUnavailable)
    assert "service 'datacheck': GET " in caught.value.message
    assert "answered 200 without JSON: <html>maintenance</html>" in caught.value.message


def test_a_4xx_is_refused_with_the_services_message(datacheck: DataCheck, jobs: HttpJobs) -> None:
    datacheck.reply = Reply(422, {"message": "db is not a database URI"})

    with pytest.raises(PermanentError) as caught:
        jobs.submit(PARAMS, key="k")

    assert not isinstance(caught.value, RemoteUnavailable)
    assert caught.value.message == (
        f"service 'datacheck' refused POST {datacheck.server.url('/api/runs')}: 422: "
        "db is not a database URI"
    )
    assert caught.value.details["status_code"] == 422


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (Reply(503, {"message": "down for upgrade"}), "answered 503: down for upgrade"),
        (Reply(500, "Internal Server Error"), "answered 500: Internal Server Error"),
        (Reply(429, {"error": "slow down"}, headers={"Retry-After": "7"}), "429: slow down"),
    ],
)
def test_5xx_and_429_mean_try_later(
    datacheck: DataCheck, jobs: HttpJobs, reply: Reply, says: str
) -> None:
    datacheck.reply = reply

    with pytest.raises(RemoteUnavailable) as caught:
        jobs.status("dc-1", PARAMS)

    assert caught.value.message.startswith("service 'datacheck': GET http://127.0.0.1:")
    assert says in caught.value.message
    assert caught.value.retry_after == (7.0 if reply.status == 429 else None)


def test_a_closed_port_means_try_later(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATACHECK_TEST_TOKEN", TOKEN)
    base = f"http://127.0.0.1:{free_port()}"

    with HttpJobs(config(base)) as jobs, pytest.raises(RemoteUnavailable) as caught:
        jobs.submit(PARAMS, key="k")

    assert caught.value.message.startswith(f"service 'datacheck': POST {base}/api/runs is ")
    assert "unreachable: ConnectionError" in caught.value.message


def test_a_service_that_hangs_is_given_up_after_the_timeout(
    datacheck: DataCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a service that holds its answer for 10 s, and a timeout of 0.3 s
    monkeypatch.setenv("DATACHECK_TEST_TOKEN", TOKEN)
    datacheck.hang = 10.0

    # When the status is read, then it gives up in about the timeout
    started = time.monotonic()
    with (
        HttpJobs(config(datacheck.server.base, timeout=0.3)) as jobs,
        pytest.raises(RemoteUnavailable) as caught,
    ):
        jobs.status("dc-1", PARAMS)
    took = time.monotonic() - started

    assert 0.25 < took < 2.0
    assert caught.value.message.endswith("/api/runs/dc-1 timed out after 0.3s")


def test_a_wrong_token_is_refused_and_no_token_is_ever_shown(
    datacheck: DataCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the token variable holding another token: the service refuses it, echoing
    # the headers it got, and the message does not show what was sent
    monkeypatch.setenv("DATACHECK_TEST_TOKEN", "tok-wrong-also-secret")
    with HttpJobs(config(datacheck.server.base)) as jobs, pytest.raises(PermanentError) as caught:
        jobs.submit(PARAMS, key="k")
    assert "refused POST" in caught.value.message and ": 401: bad key" in caught.value.message
    assert "tok-wrong-also-secret" not in caught.value.message

    # Given the variable unset: the adapter is not built, the variable named
    monkeypatch.delenv("DATACHECK_TEST_TOKEN")
    with pytest.raises(PermanentError, match="DATACHECK_TEST_TOKEN \\(token_env\\) is not set"):
        HttpJobs(config(datacheck.server.base))


@pytest.mark.parametrize("status", [200, 400, 500])
def test_a_service_echoing_the_token_and_password_back_shows_neither(
    datacheck: DataCheck, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    # Given a base URL with a password, the token in X-Token, and a service that
    # echoes every header it got (200: as the status, and in the result)
    monkeypatch.setenv("DATACHECK_TEST_TOKEN", TOKEN)
    got: list[dict[str, str]] = []

    def echo(request: Request) -> Reply:
        got.append(request.headers)
        said = f"you sent {request.headers} to {request.target}"
        return Reply(status, {"state": said, "message": said, "output": said})

    with Loopback(echo) as server:
        base = server.base.replace("http://", f"http://ana:{PASSWORD}@")
        service = config(base, auth_header="X-Token", auth_scheme="Bearer")
        with HttpJobs(service) as jobs, pytest.raises(ProdinfError) as caught:
            jobs.status("dc-1", PARAMS)

    # Then the server got both (the token as the service said; the password as basic auth)
    basic = base64.b64encode(f"ana:{PASSWORD}".encode()).decode()
    assert (got[0]["X-Token"], got[0]["Authorization"]) == (f"Bearer {TOKEN}", f"Basic {basic}")
    # And the message (and every detail) carries neither, the URL's password masked
    shown = caught.value.message + repr(caught.value.details)
    for secret in (TOKEN, PASSWORD, basic):
        assert secret not in shown
    assert "http://ana:***@127.0.0.1:" in shown


def test_the_result_is_masked_too(datacheck: DataCheck, jobs: HttpJobs) -> None:
    datacheck.states = [{"state": "complete", "output": {"echo": TOKEN, "password": "x"}}]

    found = jobs.status("dc-1", PARAMS)

    assert found.result == {"echo": "***", "password": "***"}


def test_a_submission_is_never_redirected(datacheck: DataCheck, jobs: HttpJobs) -> None:
    datacheck.reply = Reply(307, "", headers={"Location": "http://elsewhere.example.org/runs"})

    with pytest.raises(PermanentError, match=r"answered 307, a redirect to http://elsewhere\."):
        jobs.submit(PARAMS, key="k")

    assert [r.method for r in datacheck.server.seen()] == ["POST"]


def test_a_status_follows_redirects_on_its_own_origin_only(
    datacheck: DataCheck, jobs: HttpJobs
) -> None:
    # Given the status URL redirected to another path of the same server: followed
    datacheck.states = [{"state": "running"}]
    original = datacheck.answer

    def moved(request: Request) -> Reply:
        if request.path == "/api/runs/old":
            return Reply(302, "", headers={"Location": "/api/runs/dc-1"})
        if request.path == "/api/runs/away":
            return Reply(302, "", headers={"Location": "http://elsewhere.example.org/x"})
        return original(request)

    datacheck.server.answer = moved
    assert jobs.status("old", PARAMS).status == "running"
    assert datacheck.server.seen("/api/runs/dc-1")[0].headers["X-Api-Key"] == TOKEN

    # Given one to another host: not followed (the token would go with it)
    with pytest.raises(PermanentError, match=r"a redirect to http://elsewhere\.example\.org/x"):
        jobs.status("away", PARAMS)


def test_a_template_reading_a_missing_param_names_the_service_and_template(
    datacheck: DataCheck, jobs: HttpJobs
) -> None:
    with pytest.raises(ValidationError) as caught:
        jobs.submit({"other": 1}, key="k")

    assert caught.value.message.startswith("service 'datacheck': submit.body.db: ")
    assert caught.value.field == "submit.body.db"
    assert datacheck.server.seen() == []
