"""The REST API through Flask's test client, on a real embedded runtime.

The app is built by ``create_app`` on embedded settings under a temporary home:
a SQLite store and kombu's filesystem broker, both real. Jobs are moved to real
states by driving them in-process with the app's own runner, using the built-in
kinds against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_restx import schemas
from werkzeug.test import TestResponse

from prodinf.config import Settings
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from tests.conftest import SITE_BODY
from tests.embedded import messages
from tests.loopback import Reply, Site

JOBS = "/api/v1/jobs"

# -- the app ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test, never from the developer's PRODINF_* variables."""
    for name in list(os.environ):
        if name.startswith("PRODINF_"):
            monkeypatch.delenv(name)


def drive(app: Flask, job_id: str) -> None:
    app.extensions["prodinf"].runner.drive(job_id)


def submit(client: FlaskClient, kind: str, params: dict[str, Any], **extra: Any) -> str:
    response = client.post(JOBS, json={"kind": kind, "params": params, **extra})
    assert response.status_code == 201, response.get_data(as_text=True)
    return str(response.json["id"])  # type: ignore[index]


def assert_clean_error(response: TestResponse, status: int, field: str | None) -> None:
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.is_json, text
    assert response.json["field"] == field, text  # type: ignore[index]
    assert response.json["message"], text  # type: ignore[index]
    assert "Traceback" not in text
    assert 'File "' not in text


# -- submitting ------------------------------------------------------------------------------


def test_submit_stores_the_job_and_puts_its_message_in_the_broker(
    client: FlaskClient, app: Flask, home: Path, site: Site
) -> None:
    # When a job is submitted
    response = client.post(JOBS, json={"kind": "http_get", "params": {"url": site.url("/ok")}})

    # Then the answer is 201 with the job's id, url and status, and a Location
    assert response.status_code == 201
    body = response.json
    assert body is not None
    assert set(body) == {"id", "url", "status"}
    assert body["status"] == "queued"
    assert body["url"].endswith(f"/api/v1/jobs/{body['id']}")
    assert response.headers["Location"] == body["url"]
    # and the job is in the store
    assert client.get(body["url"]).json["kind"] == "http_get"  # type: ignore[index]
    # and its run message is in the embedded broker
    assert messages(home) == [
        {"task": "prodinf.run_job", "args": [body["id"]], "file": messages(home)[0]["file"]}
    ]


def test_same_idempotency_key_answers_200_with_the_same_job(
    client: FlaskClient, home: Path, site: Site
) -> None:
    """Given a submission with an idempotency key, when it is posted twice before the job
    starts, then the second answer is a 200 naming the same job, one job exists, and its
    message was sent again (the first request may have died before sending it).
    """
    submission = {"kind": "http_get", "params": {"url": site.url("/ok")}, "idempotency_key": "k-1"}
    first = client.post(JOBS, json=submission)
    again = client.post(JOBS, json=submission)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["id"] == first.json["id"]  # type: ignore[index]
    assert again.headers["Location"] == first.headers["Location"]
    assert [m["args"] for m in messages(home)] == [[first.json["id"]]] * 2  # type: ignore[index]
    assert client.get(JOBS).json["total"] == 1  # type: ignore[index]


def test_submitted_by_comes_from_the_body_or_the_user_header(
    client: FlaskClient, site: Site
) -> None:
    """Given one job submitted with submitted_by and one with the X-Prodinf-User header,
    then each job names its submitter.
    """
    url = site.url("/ok")
    by_body = submit(client, "http_get", {"url": url}, submitted_by="ana")
    response = client.post(
        JOBS, json={"kind": "http_get", "params": {"url": url}}, headers={"X-Prodinf-User": "bob"}
    )
    by_header = response.json["id"]  # type: ignore[index]

    assert client.get(f"{JOBS}/{by_body}").json["submitted_by"] == "ana"  # type: ignore[index]
    assert client.get(f"{JOBS}/{by_header}").json["submitted_by"] == "bob"  # type: ignore[index]


# -- bad input: a 4xx naming the field, never a 500 or a traceback ---------------------------

OK_URL = "http://127.0.0.1:9/x"
GOOD = {"kind": "http_get", "params": {"url": OK_URL}}
UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"

BAD_SUBMISSIONS: list[Any] = [
    pytest.param(b"this is not json", 400, "body", id="not-json"),
    pytest.param(b"[1, 2]", 400, "body", id="json-array"),
    pytest.param(b'"a string"', 400, "body", id="json-string"),
    pytest.param(b"", 400, "body", id="empty-body"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, 400, "body", id="deeply-nested"),
    pytest.param({}, 400, "kind", id="missing-kind"),
    pytest.param({"kind": 5}, 400, "kind", id="kind-not-a-string"),
    pytest.param({"kind": ""}, 400, "kind", id="kind-empty"),
    pytest.param({"kind": "no_such_kind"}, 400, "kind", id="unknown-kind"),
    pytest.param({**GOOD, "colour": "red"}, 400, "colour", id="unknown-top-level-field"),
    pytest.param({"kind": "http_get", "params": [OK_URL]}, 400, "params", id="params-array"),
    pytest.param({"kind": "http_get", "params": "x"}, 400, "params", id="params-string"),
    pytest.param({"kind": "http_get", "params": {}}, 400, "params.url", id="missing-param"),
    pytest.param({"kind": "http_get"}, 400, "params.url", id="no-params"),
    pytest.param(
        {"kind": "http_get", "params": {"url": "ftp://x/"}}, 400, "params.url", id="bad-url"
    ),
    pytest.param(
        {"kind": "http_get", "params": {"url": "not a url"}}, 400, "params.url", id="not-a-url"
    ),
    pytest.param(
        {"kind": "http_get", "params": {"url": OK_URL, "timeout": -1}},
        400,
        "params.timeout",
        id="param-out-of-range",
    ),
    pytest.param(
        {"kind": "http_get", "params": {"url": OK_URL, "verb": "POST"}},
        400,
        "params.verb",
        id="unknown-param",
    ),
    pytest.param(
        b'{"kind": "wait_for_url", "params": {"url": "http://127.0.0.1:9/", "timeout": 1e999}}',
        400,
        "params.timeout",
        id="param-overflows-to-infinity",
    ),
    pytest.param(
        {"kind": "register_metadata", "params": {"database_uri": "sqlite:///scratch_copy.sqlite"}},
        400,
        "params.database_uri",
        id="name-no-naming-rule-matches",
    ),
    pytest.param({**GOOD, "idempotency_key": "k" * 201}, 400, "idempotency_key", id="key-long"),
    pytest.param({**GOOD, "idempotency_key": 5}, 400, "idempotency_key", id="key-not-string"),
    pytest.param({**GOOD, "idempotency_key": ""}, 400, "idempotency_key", id="key-empty"),
    pytest.param(
        b'{"kind": "http_get", "params": {"url": "http://127.0.0.1:9/"}, '
        b'"idempotency_key": "\\ud800"}',
        400,
        "idempotency_key",
        id="key-lone-surrogate",
    ),
    pytest.param({**GOOD, "submitted_by": 5}, 400, "submitted_by", id="submitted-by-number"),
    pytest.param({**GOOD, "submitted_by": ["a"]}, 400, "submitted_by", id="submitted-by-list"),
    pytest.param({**GOOD, "submitted_by": "u" * 201}, 400, "submitted_by", id="submitted-by-long"),
    pytest.param(
        b'{"kind": "http_get", "params": {"url": "http://127.0.0.1:9/"}, '
        b'"submitted_by": "\\ud800"}',
        400,
        "submitted_by",
        id="submitted-by-lone-surrogate",
    ),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_SUBMISSIONS)
def test_bad_submissions_get_a_4xx_naming_the_field(
    client: FlaskClient, home: Path, body: Any, status: int, field: str
) -> None:
    """Given a bad submission, when it is posted, then the answer is a 4xx naming the field,
    without a traceback, and nothing was stored or sent.
    """
    if isinstance(body, bytes):
        response = client.post(JOBS, data=body, content_type="application/json")
    else:
        response = client.post(JOBS, json=body)

    assert_clean_error(response, status, field)
    # and nothing was stored or sent
    assert client.get(JOBS).json["total"] == 0  # type: ignore[index]
    assert messages(home) == []


def test_a_body_that_is_not_declared_json_is_refused(client: FlaskClient) -> None:
    """Given a JSON body sent as text/plain (what a page on another site may send without
    asking), when it is posted, then a 415 names the Content-Type and nothing is stored."""
    response = client.post(JOBS, data=json.dumps(GOOD), content_type="text/plain")
    assert_clean_error(response, 415, "Content-Type")
    assert "text/plain" in response.json["message"]  # type: ignore[index]
    assert client.get(JOBS).json["total"] == 0  # type: ignore[index]


def test_notify_is_accepted_shown_and_checked_field_by_field(client: FlaskClient) -> None:
    """Given a job submitted with notify, then the job shows it; given a bad notify, then a
    400 names the field that is wrong.
    """
    notify = {"email": ["ada@example.org"], "webhook": "https://hooks.example.org/p"}
    answer = client.post(
        JOBS, json={"kind": "http_get", "params": {"url": "http://x.example/"}, "notify": notify}
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    assert client.get(answer.json["url"]).json["notify"] == notify  # type: ignore[index]

    for bad, field in [
        ({"email": ["nobody"]}, "notify.email.0"),
        ({"webhook": "gopher://x"}, "notify.webhook"),
        ({"pager": "x"}, "notify.pager"),
        ([], "notify"),
        ({}, "notify"),
    ]:
        response = client.post(
            JOBS, json={"kind": "http_get", "params": {"url": "http://x.example/"}, "notify": bad}
        )
        assert_clean_error(response, 400, field)


def test_user_header_is_held_to_the_submitted_by_limit(client: FlaskClient) -> None:
    """Given an X-Prodinf-User header longer than submitted_by may be, when a job is
    posted, then a 400 names submitted_by.
    """
    # The header is another way to say submitted_by: the same limit applies
    # (a longer value does not fit the column on PostgreSQL or MariaDB).
    response = client.post(JOBS, json=GOOD, headers={"X-Prodinf-User": "u" * 300})
    assert_clean_error(response, 400, "submitted_by")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=1.5", "limit"),
        ("limit=", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("status=done", "status"),
        ("status=QUEUED", "status"),
    ],
)
def test_bad_list_filters_get_a_400_naming_the_field(
    client: FlaskClient, query: str, field: str
) -> None:
    """Given a bad filter on the job list, when it is asked for, then a 400 names it."""
    assert_clean_error(client.get(f"{JOBS}?{query}"), 400, field)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", f"{JOBS}/{UNKNOWN_ID}"),
        ("post", f"{JOBS}/{UNKNOWN_ID}/cancel"),
        ("post", f"{JOBS}/{UNKNOWN_ID}/retry"),
        ("get", f"{JOBS}/not-even-a-uuid"),
    ],
)
def test_unknown_job_is_a_404_naming_id(client: FlaskClient, method: str, path: str) -> None:
    """Given a job id nobody has, when it is read, cancelled or retried, then a 404 names id."""
    assert_clean_error(getattr(client, method)(path), 404, "id")


def test_unknown_kind_is_a_404(client: FlaskClient) -> None:
    """Given a kind nobody registered, when it is read, then a 404 names it."""
    assert_clean_error(client.get("/api/v1/kinds/no_such_kind"), 404, "name")


def test_unknown_route_and_wrong_method_answer_json(client: FlaskClient) -> None:
    """Given a path the API does not have, or a method a path does not take, then the
    answer is a JSON error, not an HTML page.
    """
    assert_clean_error(client.get("/api/v1/nothing-here"), 404, None)
    assert_clean_error(client.delete(JOBS), 405, None)


def test_cancel_of_a_finished_job_is_a_conflict(
    client: FlaskClient, app: Flask, site: Site
) -> None:
    """Given a job that has succeeded, when it is cancelled, then a 409 names id and the
    job stays succeeded.
    """
    job_id = submit(client, "http_get", {"url": site.url("/ok")})
    drive(app, job_id)

    assert_clean_error(client.post(f"{JOBS}/{job_id}/cancel"), 409, "id")
    assert client.get(f"{JOBS}/{job_id}").json["status"] == "succeeded"  # type: ignore[index]


def test_retry_of_a_queued_job_is_a_conflict(client: FlaskClient, site: Site) -> None:
    """Given a queued job, when it is retried, then a 409 names id."""
    job_id = submit(client, "http_get", {"url": site.url("/ok")})

    assert_clean_error(client.post(f"{JOBS}/{job_id}/retry"), 409, "id")


# -- reading ---------------------------------------------------------------------------------


def test_job_document_shape_after_a_real_run(client: FlaskClient, app: Flask, site: Site) -> None:
    # Given a job that fetched a real URL
    job_id = submit(client, "http_get", {"url": site.url("/ok")}, submitted_by="ana")
    drive(app, job_id)

    # When it is read
    response = client.get(f"{JOBS}/{job_id}")

    # Then it has everything a caller follows a job by
    assert response.status_code == 200
    job = response.json
    assert job is not None
    assert {
        "id",
        "url",
        "kind",
        "status",
        "progress",
        "steps",
        "result",
        "error",
        "history",
        "params",
        "submitted_by",
        "created_at",
        "updated_at",
        "finished_at",
    } <= set(job)
    assert (job["id"], job["kind"], job["status"]) == (job_id, "http_get", "succeeded")
    assert job["url"].endswith(f"{JOBS}/{job_id}")
    assert job["progress"] == {"done": 1, "total": 1, "message": "succeeded"}
    assert job["params"] == {"url": site.url("/ok"), "timeout": 30.0}
    body = SITE_BODY
    expected = {"status_code": 200, "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
    assert job["result"] == expected
    assert job["error"] is None
    assert [(s["name"], s["status"], s["attempts"]) for s in job["steps"]] == [
        ("fetch", "succeeded", 0)
    ]
    assert job["steps"][0]["output"] == expected
    assert [h["event"] for h in job["history"]] == [
        "job.submitted",
        "step.started",
        "step.succeeded",
        "job.succeeded",
    ]
    assert all(h["at"].endswith("+00:00") for h in job["history"])


def test_list_filters_and_pages_with_a_next_link(
    client: FlaskClient, app: Flask, site: Site
) -> None:
    # Given five http_get jobs (one of them run to the end) and one wait_for_url job
    fetches = [submit(client, "http_get", {"url": site.url(f"/ok?{i}")}) for i in range(5)]
    waiter = submit(client, "wait_for_url", {"url": site.url("/pending")})
    site.routes["/ok?2"] = Reply(200, b"two")
    drive(app, fetches[2])

    # Then filters select by kind and status
    by_kind = client.get(f"{JOBS}?kind=http_get").json
    assert by_kind is not None
    assert (by_kind["total"], [j["id"] for j in by_kind["items"]]) == (5, fetches[::-1])
    assert all(j["url"].endswith(j["id"]) for j in by_kind["items"])
    done = client.get(f"{JOBS}?status=succeeded").json
    assert (done["total"], [j["id"] for j in done["items"]]) == (1, [fetches[2]])  # type: ignore[index]
    assert client.get(f"{JOBS}?kind=wait_for_url&status=queued").json["total"] == 1  # type: ignore[index]
    assert client.get(f"{JOBS}?kind=nothing").json == {
        "items": [],
        "total": 0,
        "total_exact": True,
        "limit": 50,
        "offset": 0,
        "next": None,
        "previous": None,
    }

    # And following `next` walks every job, newest first, a page at a time
    seen: list[str] = []
    url: str | None = f"{JOBS}?limit=2"
    pages = 0
    while url:
        page = client.get(url).json
        assert page is not None
        assert page["total"] == 6 and page["limit"] == 2
        seen += [j["id"] for j in page["items"]]
        url = page["next"]
        pages += 1
    assert pages == 3
    assert seen == [waiter, *fetches[::-1]]
    # and `previous` walks back from the last page to the first
    back: list[str] = []
    url = last_previous = page["previous"]
    while url:
        page = client.get(url).json
        assert page is not None
        back = [j["id"] for j in page["items"]] + back
        url = page["previous"]
    assert back == seen[:4] and last_previous is not None

    # And `next` keeps the filters
    page = client.get(f"{JOBS}?kind=http_get&limit=3").json
    assert page is not None
    following = client.get(page["next"]).json
    assert following is not None
    assert [j["id"] for j in following["items"]] == fetches[1::-1]
    assert following["next"] is None


def test_failed_job_is_retried_from_where_it_stopped(
    client: FlaskClient, app: Flask, home: Path, site: Site
) -> None:
    # Given a job that failed because its URL answered 404
    job_id = submit(client, "http_get", {"url": site.url("/later")})
    drive(app, job_id)
    job = client.get(f"{JOBS}/{job_id}").json
    assert job is not None
    assert job["status"] == "failed"
    assert job["error"]["step"] == "fetch"
    assert "404" in job["error"]["message"]

    # When the URL starts working and the job is retried
    site.routes["/later"] = Reply(200, b"here now")
    response = client.post(f"{JOBS}/{job_id}/retry")

    # Then it is queued again, its message is in the broker, and it succeeds
    assert response.status_code == 200
    assert response.json["status"] == "queued"  # type: ignore[index]
    assert [m["args"] for m in messages(home)] == [[job_id], [job_id]]
    drive(app, job_id)
    job = client.get(f"{JOBS}/{job_id}").json
    assert job is not None
    assert (job["status"], job["error"]) == ("succeeded", None)
    assert job["result"]["bytes"] == len(b"here now")
    assert "job.retried" in [h["event"] for h in job["history"]]


def test_waiting_job_is_cancelled_and_can_be_retried(
    client: FlaskClient, app: Flask, site: Site
) -> None:
    # Given a job waiting on a URL that is still running
    job_id = submit(client, "wait_for_url", {"url": site.url("/pending"), "interval": 60})
    drive(app, job_id)
    job = client.get(f"{JOBS}/{job_id}").json
    assert job is not None
    assert job["status"] == "waiting"
    assert job["steps"][0]["status"] == "waiting"
    assert job["steps"][0]["waiting_for"]

    # When it is cancelled
    response = client.post(f"{JOBS}/{job_id}/cancel")

    # Then it is cancelled at once, and its step too
    assert response.status_code == 200
    assert response.json["status"] == "cancelled"  # type: ignore[index]
    job = client.get(f"{JOBS}/{job_id}").json
    assert job is not None
    assert job["status"] == "cancelled"
    assert job["steps"][0]["status"] == "cancelled"

    # And a cancelled job can be retried; it finishes once the URL says done
    assert client.post(f"{JOBS}/{job_id}/retry").json["status"] == "queued"  # type: ignore[index]
    site.routes["/pending"] = Reply(200, {"status": "done", "rows": 3})
    drive(app, job_id)
    job = client.get(f"{JOBS}/{job_id}").json
    assert job is not None
    assert (job["status"], job["result"]) == ("succeeded", {"status": "done", "rows": 3})


def test_kinds_lists_the_built_ins_with_their_params_schema(client: FlaskClient) -> None:
    """When the kinds are listed, then the built-in ones are there, each with its queue,
    description and params schema, as each kind's own document shows it.
    """
    response = client.get("/api/v1/kinds")

    assert response.status_code == 200
    kinds = {k["name"]: k for k in response.json["items"]}  # type: ignore[index]
    assert {"http_get", "wait_for_url"} <= set(kinds)
    for name in ("http_get", "wait_for_url"):
        schema = kinds[name]["params_schema"]
        assert schema["type"] == "object"
        assert schema["required"] == ["url"]
        assert "url" in schema["properties"]
        assert kinds[name]["queue"] == "jobs"
        assert kinds[name]["description"]
        assert client.get(f"/api/v1/kinds/{name}").json == kinds[name]


# -- documents -------------------------------------------------------------------------------


def test_swagger_json_is_valid_openapi_2_with_the_job_paths(client: FlaskClient) -> None:
    """When the OpenAPI document is asked for, then it is valid OpenAPI 2.0 and describes
    the job and kind paths.
    """
    response = client.get("/api/v1/swagger.json")

    assert response.status_code == 200
    spec = response.json
    assert spec is not None
    assert spec["swagger"] == "2.0"
    assert spec["basePath"] == "/api/v1"
    assert {
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/retry",
        "/kinds",
        "/kinds/{name}",
    } <= set(spec["paths"])
    assert {"get", "post"} <= set(spec["paths"]["/jobs"])
    assert {"201", "200", "400", "503"} <= set(spec["paths"]["/jobs"]["post"]["responses"])
    assert spec["definitions"]["Submission"]["required"] == ["kind"]
    schemas.validate(spec)  # against the OpenAPI 2.0 JSON schema flask-restx ships


def test_docs_serve_swagger_ui(client: FlaskClient) -> None:
    """When /api/docs is opened, then Swagger UI is served, pointing at the document."""
    response = client.get("/api/docs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "swagger-ui" in page
    assert "/api/v1/swagger.json" in page
    with client.get("/swaggerui/swagger-ui-bundle.js") as asset:
        assert asset.status_code == 200


# -- health and an unreachable store ---------------------------------------------------------


def test_health_reports_store_and_broker(client: FlaskClient) -> None:
    """Given embedded defaults, when /health is asked, then store and broker are ok."""
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json == {"store": "ok", "broker": "ok"}


PASSWORD = "pw-7f3a"


@pytest.fixture
def app_without_store(home: Path) -> Iterator[Flask]:
    settings = Settings(home=home, database_url=f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/x")
    app = create_app(settings)
    yield app
    runtime: Runtime = app.extensions["prodinf"]
    runtime.close()


def test_unreachable_store_is_a_503_without_the_password(
    app_without_store: Flask, site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a portal whose store URL (with a password) points at nothing
    client = app_without_store.test_client()
    caplog.set_level(logging.DEBUG)

    # When its health, a submission, the list, a job and a cancel are asked for,
    # Then each is a 503 naming the store, without a traceback or the password

    health = client.get("/health")
    assert health.status_code == 503
    assert health.json["store"].startswith("down")  # type: ignore[index]
    assert health.json["broker"] == "ok"  # type: ignore[index]

    responses = [
        client.post(JOBS, json={"kind": "http_get", "params": {"url": site.url("/ok")}}),
        client.get(JOBS),
        client.get(f"{JOBS}/{UNKNOWN_ID}"),
        client.post(f"{JOBS}/{UNKNOWN_ID}/cancel"),
    ]
    for response in [health, *responses]:
        text = response.get_data(as_text=True)
        assert PASSWORD not in text
        assert "Traceback" not in text
    for response in responses:
        assert_clean_error(response, 503, None)
        assert "store" in response.json["message"]  # type: ignore[index]
        assert response.headers["Retry-After"]
    # and nothing the portal logged shows the password either, nor a traceback: each
    # outage answer is one warning line
    assert PASSWORD not in caplog.text
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert any("answered 503" in r.getMessage() for r in caplog.records)


# -- secrets ---------------------------------------------------------------------------------

SECRET = "hunter2"


def test_url_passwords_never_show_in_a_job_or_its_history(
    client: FlaskClient, app: Flask, home: Path, site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    # Given jobs whose URLs carry a password: one answers 404, one is unreachable
    fetch = submit(
        client, "http_get", {"url": site.url("/missing").replace("//", f"//user:{SECRET}@")}
    )
    wait = submit(
        client,
        "wait_for_url",
        {"url": f"http://user:{SECRET}@127.0.0.1:9/x", "interval": 0.1, "max_errors": 2},
    )

    # When they run and fail
    caplog.set_level(logging.DEBUG)
    drive(app, fetch)
    drive(app, wait)
    time.sleep(0.15)
    drive(app, wait)

    # Then nothing the API shows carries the password, though the URLs still show
    for job_id in (fetch, wait):
        job = client.get(f"{JOBS}/{job_id}").json
        assert job is not None
        assert job["status"] == "failed"
        text = json.dumps(job)
        assert SECRET not in text
        assert "user:***@" in job["params"]["url"]
        assert "user:***@" in job["error"]["message"]
        assert len(job["history"]) >= 3
    assert SECRET not in client.get(JOBS).get_data(as_text=True)
    # and the broker holds both jobs' run messages, which carry their ids only
    held = messages(home)
    assert {job_id for m in held for job_id in m["args"]} == {fetch, wait}
    for message in held:
        assert SECRET not in (home / "broker" / "queues" / message["file"]).read_text()
    # and nothing was logged with the password
    assert SECRET not in caplog.text


def test_a_job_with_a_long_param_is_read_quickly(client: FlaskClient) -> None:
    # Given a job whose URL is as long as a URL param may be (8 kB, still a valid URL)
    job_id = submit(client, "http_get", {"url": "http://127.0.0.1:9/" + "a" * 8_000})

    # When it is read, credentials masking and all
    started = time.perf_counter()
    response = client.get(f"{JOBS}/{job_id}")
    elapsed = time.perf_counter() - started

    # Then it answers in well under a second (masking must be linear in the text)
    assert response.status_code == 200
    assert elapsed < 0.5, f"GET took {elapsed:.1f}s"


def test_format_email_answers_the_short_summary_a_mail_wants(
    client: FlaskClient, app: Flask, site: Site
) -> None:
    """Given a job (what the Ensembl snippet waits on with ?format=email), when its URL
    is read with ?format=email, then it answers its status and a short subject and body
    (not the whole job document): pending while it runs, the end's summary after."""
    job_id = submit(client, "http_get", {"url": site.url("/ok")})
    pending = client.get(f"{JOBS}/{job_id}?format=email").json
    assert pending["status"] == "queued"

    drive(app, job_id)
    done = client.get(f"{JOBS}/{job_id}?format=email")

    assert done.status_code == 200
    summary = done.json
    assert set(summary) == {"id", "status", "subject", "body", "html"}
    assert summary["status"] == "succeeded"
    assert summary["subject"] == f"[prodinf] http_get job {job_id[:8]} succeeded"
    assert f"/jobs/{job_id}" in summary["body"] and len(summary["body"]) < 3000
    assert "history" not in summary["body"]
    assert_clean_error(client.get(f"{JOBS}/{job_id}?format=xml"), 400, "format")


def test_a_name_no_naming_rule_matches_is_refused_before_it_runs(
    client: FlaskClient, tmp_path: Path
) -> None:
    """Given register_metadata for a database whose name no naming rule matches, when it
    is submitted, then the 400 says so and what to do, instead of a job that would fail
    at its first step; a name a rule matches is taken."""
    bad = client.post(
        JOBS,
        json={
            "kind": "register_metadata",
            "params": {"database_uri": f"sqlite:///{tmp_path}/tmp_x.sqlite"},
        },
    )
    assert_clean_error(bad, 400, "params.database_uri")
    message = bad.json["message"]  # type: ignore[index]
    assert "'tmp_x' matches no naming rule" in message
    assert "PRODINF_NAMING_RULES" in message and "Value error" not in message

    good = client.post(
        JOBS,
        json={
            "kind": "register_metadata",
            "params": {"database_uri": f"sqlite:///{tmp_path}/homo_sapiens_core_115_38.sqlite"},
        },
    )
    assert good.status_code == 201, good.get_data(as_text=True)
