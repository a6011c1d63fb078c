"""What the portal accepts over HTTP and what every answer carries (portal/hardening.py).

Each finding of the probe in issue 14 replayed against the portal (the app built by
``create_app`` on embedded settings, through Flask's test client; a real server where
the server itself answers): a foreign ``Host``, a cross-site form post to the REST
cancel, a foreign ``Origin``, a body too large, answers without security headers, a
405 without ``Allow``, a ``Server`` header naming versions, the built-in secret key
used silently.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from prodinf.cli import main
from prodinf.config import Settings, get_settings
from prodinf.exceptions import ValidationError
from prodinf.portal import create_app
from prodinf.portal.hardening import allowed_hosts, host_is_allowed
from prodinf.runtime import Runtime
from prodinf.store import upgrade
from tests.integration.browser import serve
from tests.loopback import Site, free_port

JOBS = "/api/v1/jobs"
ATTACKER = "attacker.example"
KEY = "a-long-random-key-for-these-tests-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test, never from the developer's PRODINF_* variables."""
    for name in list(os.environ):
        if name.startswith("PRODINF_"):
            monkeypatch.delenv(name)


@pytest.fixture
def make_app(home: Path) -> Iterator[Callable[..., Flask]]:
    """``make_app(**settings)``: a portal on embedded settings under the test's home,
    its store migrated; every one is closed at teardown."""
    made: list[Flask] = []

    def build(**values: object) -> Flask:
        app = create_app(Settings(home=home, **values))  # type: ignore[arg-type]
        runtime: Runtime = app.extensions["prodinf"]
        upgrade(runtime.store)
        made.append(app)
        return app

    yield build
    for app in made:
        app.extensions["prodinf"].close()


def queued_job(client: FlaskClient, site: Site) -> str:
    answer = client.post(JOBS, json={"kind": "http_get", "params": {"url": site.url("/ok")}})
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return str(answer.json["id"])  # type: ignore[index]


def status_of(client: FlaskClient, job_id: str) -> str:
    return str(client.get(f"{JOBS}/{job_id}").json["status"])  # type: ignore[index]


def refused(response: TestResponse, status: int, field: str) -> None:
    """A JSON refusal: the status, the field named, no traceback."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.is_json, text
    assert response.json["field"] == field, text  # type: ignore[index]
    assert "Traceback" not in text


# -- trusted hosts -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [JOBS, "/api/v1/nothing-here", "/", "/jobs/new", "/login"])
def test_a_foreign_host_is_refused_and_never_repeated(client: FlaskClient, path: str) -> None:
    """Given a request naming Host: attacker.example (a name pointed at the portal's
    address: DNS rebinding), then it is a 400 naming Host, JSON from the API and a page
    elsewhere, and the name is nowhere in the answer (no url, next or link built on it)."""
    response = client.get(path, headers={"Host": ATTACKER})

    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert ATTACKER not in text
    assert ATTACKER not in str(response.headers)
    if path.startswith("/api"):
        refused(response, 400, "Host")
    else:
        assert response.mimetype == "text/html"
        assert "PRODINF_ALLOWED_HOSTS" in text


def test_a_foreign_host_cannot_post_either(client: FlaskClient, site: Site) -> None:
    """Given a submission sent with a foreign Host, then nothing is stored."""
    answer = client.post(
        JOBS,
        json={"kind": "http_get", "params": {"url": site.url("/ok")}},
        headers={"Host": f"{ATTACKER}:5000"},
    )
    refused(answer, 400, "Host")
    assert client.get(JOBS).json["total"] == 0  # type: ignore[index]


def test_links_name_the_host_asked_for_when_it_is_one_of_the_portals(
    make_app: Callable[..., Flask], site: Site
) -> None:
    """Given PRODINF_ALLOWED_HOSTS naming a domain, then a request to one of its names
    is answered, with links on that name; loopback names still are; others are not."""
    client = make_app(allowed_hosts=[".prodinf.example.org"]).test_client()

    job_id = queued_job(client, site)
    answer = client.get(f"{JOBS}?limit=1", headers={"Host": "eu.prodinf.example.org:8443"})
    assert answer.status_code == 200
    assert answer.json["items"][0]["url"].startswith("http://eu.prodinf.example.org:8443/")  # type: ignore[index]
    for host in ("prodinf.example.org", "localhost:5000", "127.0.0.1", "[::1]:5000"):
        assert client.get(f"{JOBS}/{job_id}", headers={"Host": host}).status_code == 200
    for host in ("prodinf.example.org.attacker.example", "evilprodinf.example.org", ATTACKER):
        assert client.get(JOBS, headers={"Host": host}).status_code == 400, host


def test_the_public_url_and_the_listening_address_are_the_portals_names(home: Path) -> None:
    """The portal answers to its loopback names, its public URL's host, and the address
    it listens on unless that is a wildcard."""
    settings = Settings(
        home=home, public_url="https://prodinf.example.org", host="10.1.2.3", secret_key=KEY
    )
    names = allowed_hosts(settings)
    for host in ("localhost", "127.0.0.1:5000", "[::1]", "prodinf.example.org", "10.1.2.3:5000"):
        assert host_is_allowed(host, names), host
    assert not host_is_allowed("10.1.2.4", names)
    assert "0.0.0.0" not in allowed_hosts(Settings(home=home, host="0.0.0.0", secret_key=KEY))
    assert host_is_allowed(ATTACKER, allowed_hosts(Settings(home=home, allowed_hosts=["*"])))
    for malformed in ("", "local host", "localhost:port", "[::1"):
        assert not host_is_allowed(malformed, names), malformed


def test_health_answers_whatever_the_host(client: FlaskClient) -> None:
    """A load balancer's health check may name the portal's address: /health answers."""
    assert client.get("/health", headers={"Host": "10.9.8.7:5000"}).status_code == 200


# -- mutating API calls: JSON from this portal only --------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", "a=1"),
        ("application/x-www-form-urlencoded", ""),
        ("text/plain", '{"x": 1}'),
        ("multipart/form-data; boundary=x", "--x--\r\n"),
    ],
)
def test_a_cross_site_form_post_does_not_cancel_a_job(
    client: FlaskClient, site: Site, content_type: str, body: str
) -> None:
    """Given a queued job, when a page elsewhere posts a form (a "simple request" a
    browser sends without asking) to its REST cancel, then a 415 names the
    Content-Type, and the job is still queued."""
    job_id = queued_job(client, site)

    response = client.post(f"{JOBS}/{job_id}/cancel", data=body, content_type=content_type)

    refused(response, 415, "Content-Type")
    assert content_type.split(";")[0] in response.json["message"]  # type: ignore[index]
    assert status_of(client, job_id) == "queued"


def test_a_foreign_origin_is_refused_on_every_mutating_call(
    client: FlaskClient, site: Site
) -> None:
    """Given a queued job, when another site's page (Origin: http://evil.example, or a
    sandboxed one's null) posts JSON to cancel it or submit a job, then a 403 names
    Origin and nothing changes."""
    job_id = queued_job(client, site)
    for origin in ("http://evil.example", "null", "http://localhost.evil.example"):
        headers = {"Origin": origin}
        refused(client.post(f"{JOBS}/{job_id}/cancel", json={}, headers=headers), 403, "Origin")
        refused(client.post(f"{JOBS}/{job_id}/cancel", headers=headers), 403, "Origin")
        submit = {"kind": "http_get", "params": {"url": site.url("/ok")}}
        refused(client.post(JOBS, json=submit, headers=headers), 403, "Origin")
    assert status_of(client, job_id) == "queued"
    assert client.get(JOBS).json["total"] == 1  # type: ignore[index]


def test_the_portals_own_pages_and_programs_may_still_cancel_and_retry(
    make_app: Callable[..., Flask], site: Site
) -> None:
    """A call with no body (what the CLI, curl -X POST and other prodinfs send), an
    empty or {} JSON body, and one whose Origin is the portal itself (by the Host asked
    for, or PRODINF_PUBLIC_URL behind a proxy) all work; a GET is never refused for
    its Origin."""
    client = make_app(public_url="https://prodinf.example.org").test_client()
    for how in (
        {},
        {"json": {}},
        {"data": "", "content_type": "application/json"},
        {"json": {}, "headers": {"Origin": "http://localhost"}},
        {"json": {}, "headers": {"Origin": "https://prodinf.example.org"}},
    ):
        job_id = queued_job(client, site)
        answer = client.post(f"{JOBS}/{job_id}/cancel", **how)  # type: ignore[arg-type]
        assert answer.status_code == 200, (how, answer.get_data(as_text=True))
        assert status_of(client, job_id) == "cancelled"
        assert client.post(f"{JOBS}/{job_id}/retry", **how).status_code == 200  # type: ignore[arg-type]
    assert client.get(JOBS, headers={"Origin": "http://evil.example"}).status_code == 200


def test_a_nul_in_a_query_arg_or_path_is_a_400_naming_it(client: FlaskClient) -> None:
    """No store keeps a NUL: the API names where it is instead of failing in the store."""
    refused(client.get(f"{JOBS}?kind=a%00b"), 400, "kind")
    refused(client.get(f"{JOBS}/a%00b"), 400, "job_id")


# -- size -------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_a_413_naming_body(client: FlaskClient) -> None:
    """Given a 2 MB submission (the default limit is 1 MiB), then a 413 names body and
    nothing is stored; a form page answers a page."""
    big = {"kind": "http_get", "params": {"url": "http://x.example/" + "a" * 2_000_000}}
    refused(client.post(JOBS, json=big), 413, "body")
    assert client.get(JOBS).json["total"] == 0  # type: ignore[index]

    page = client.post("/jobs/new", data={"kind": "http_get", "params.url": "x" * 2_000_000})
    assert page.status_code == 413
    assert page.mimetype == "text/html"


def test_the_limit_is_a_setting(make_app: Callable[..., Flask]) -> None:
    """PRODINF_MAX_REQUEST_BYTES sets it."""
    client = make_app(max_request_bytes=2048).test_client()
    refused(client.post(JOBS, json={"kind": "http_get", "x": "y" * 3000}), 413, "body")
    assert client.post(JOBS, json={"kind": "http_get", "x": "y"}).status_code == 400


# -- headers ----------------------------------------------------------------------------------

SECURITY_HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/"),  # a page
        ("get", "/jobs/new?kind=http_get"),
        ("get", JOBS),  # an API answer
        ("get", "/api/v1/swagger.json"),
        ("get", "/api/docs"),
        ("get", "/static/style.css"),  # a static file
        ("get", "/swaggerui/swagger-ui-bundle.js"),
        ("get", "/health"),
        ("get", "/no-such-page"),  # errors
        ("get", f"{JOBS}/no-such-job"),
        ("delete", JOBS),
        ("post", f"{JOBS}/x/cancel"),
    ],
)
def test_every_answer_carries_the_security_headers(
    client: FlaskClient, method: str, path: str
) -> None:
    response = getattr(client, method)(path)
    with response:
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy


def test_a_405_says_what_is_allowed(client: FlaskClient) -> None:
    """A method a path does not take: a JSON 405 whose Allow lists what it takes."""
    response = client.delete(JOBS)
    refused(response, 405, None)  # type: ignore[arg-type]
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert "DELETE" not in response.headers["Allow"]


def test_the_session_cookie_is_httponly_and_samesite(make_app: Callable[..., Flask]) -> None:
    """The session cookie (a form's CSRF token is kept in it) is HttpOnly and
    SameSite=Lax, and Secure when the portal is reached over https."""
    for public_url, secure in ((None, False), ("https://prodinf.example.org", True)):
        client = make_app(public_url=public_url).test_client()
        cookie = client.get("/jobs/new?kind=http_get").headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie
        assert ("Secure" in cookie) is secure


def test_the_server_names_no_versions(app: Flask) -> None:
    """Given the portal served by the server prodinf up and prodinf portal use, then its
    Server header names neither Werkzeug's nor Python's version."""
    for base in serve(app):
        with urllib.request.urlopen(f"{base}/health", timeout=10) as answer:
            server = answer.headers["Server"]
            assert answer.headers["X-Frame-Options"] == "DENY"
    assert server == "prodinf"


# -- the secret key ---------------------------------------------------------------------------


def test_the_built_in_secret_key_is_said_on_loopback(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="prodinf")
    make_app()
    assert any("built-in secret key" in r.getMessage() for r in caplog.records)
    caplog.clear()
    make_app(secret_key=KEY)
    assert not any("secret key" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "prodinf.example.org"])
def test_the_built_in_secret_key_is_refused_beyond_loopback(home: Path, host: str) -> None:
    with pytest.raises(ValidationError) as refusal:
        create_app(Settings(home=home, host=host))
    assert refusal.value.field == "PRODINF_SECRET_KEY"
    assert host in refusal.value.message
    assert "token_hex" in refusal.value.message  # how to make one


@pytest.mark.parametrize("command", ["up", "portal"])
def test_prodinf_refuses_to_serve_beyond_loopback_with_the_built_in_key(
    home: Path, command: str
) -> None:
    """prodinf up and prodinf portal on 0.0.0.0 (even --insecure about authentication)
    stop before anything starts, naming PRODINF_SECRET_KEY."""
    get_settings.cache_clear()
    result = CliRunner().invoke(
        main,
        [command, "--host", "0.0.0.0", "--port", str(free_port()), "--insecure"],
        env={"PRODINF_HOME": str(home)},
    )
    get_settings.cache_clear()
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert "PRODINF_SECRET_KEY" in result.output
    assert "Traceback" not in result.output
