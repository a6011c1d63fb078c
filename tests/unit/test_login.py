"""Logging in to the pages, their forms' CSRF tokens, and serving beyond loopback.

Given the portal with ``PRODINF_AUTH=users`` and users made as an admin makes them
(``prodinf user add``); when someone logs in, posts a form, guesses passwords, or
starts the portal on a shared address; then what a careful user would expect holds.
"""

from __future__ import annotations

import html
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from flask import Flask
from flask.testing import FlaskClient

from prodinf.config import Settings
from prodinf.portal import auth_views, create_app
from prodinf.runtime import Runtime
from prodinf.store import upgrade
from prodinf.store.users import Users
from tests.embedded import run, submit
from tests.loopback import free_port
from tests.pages import csrf, page, text_of

PASSWORD = "a-long-enough-password"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    monkeypatch.setattr("prodinf.portal.auth_views.FAILED_DELAY", 0.0)
    made = create_app(Settings(home=home, auth="users"))
    runtime: Runtime = made.extensions["prodinf"]
    upgrade(runtime.store)
    users = Users(runtime.store)
    users.add("ola", "operator", PASSWORD)
    users.add("vic", "viewer", PASSWORD)
    users.add("ada", "admin", PASSWORD)
    yield made
    runtime.close()


def log_in(client: FlaskClient, name: str, password: str = PASSWORD, next_: str = "/") -> int:
    token = csrf(client, "/login")
    answer = client.post(
        "/login", data={"csrf_token": token, "name": name, "password": password, "next": next_}
    )
    return answer.status_code


def test_a_password_in_the_page_asked_for_is_not_carried_to_the_login(app: Flask) -> None:
    """Given no session, when a server's databases are asked for with its password in the
    address, then the login's address and page keep the page and the host, not the
    password; after logging in, the page asked for comes back with the password masked."""
    client = app.test_client()
    asked = client.get("/handovers/new", query_string={"server_uri": "mysql://u:S3c@r3t@h:3306"})
    assert asked.status_code == 302
    location = unquote(asked.headers["Location"])
    login = client.get(asked.headers["Location"]).get_data(as_text=True)
    for shown in (unquote(location), unquote(unquote(html.unescape(login)))):
        assert "S3c" not in shown and "r3t" not in shown
        assert "/handovers/new?server_uri=mysql://u:***@h:3306" in shown

    back = client.post(
        "/login",
        data={"csrf_token": csrf(client, "/login"), "name": "ola", "password": PASSWORD}
        | {"next": location.partition("next=")[2]},
    )
    assert unquote(back.headers["Location"]) == "/handovers/new?server_uri=mysql://u:***@h:3306"


def test_a_page_asks_for_a_login_then_shows_who_is_in(app: Flask) -> None:
    """Given no session, when a job page is opened, then the login page is shown; after
    logging in, the page it asked for is, with who is logged in and a Log out button."""
    client = app.test_client()
    first = client.get("/jobs/new")
    assert first.status_code == 302 and first.headers["Location"].startswith("/login?next=")

    assert log_in(client, "ola", next_="/jobs/new") == 302
    shown = page(client, "/jobs/new")
    assert "ola" in text_of(shown, "who") and "operator" in text_of(shown, "who")

    token = csrf(client, "/")
    out = client.post("/logout", data={"csrf_token": token})
    assert out.status_code == 302
    assert client.get("/").status_code == 302  # logged out: back to the login


def test_a_wrong_password_and_an_unknown_name_get_the_same_answer(app: Flask) -> None:
    client = app.test_client()
    wrong = client.post("/login", data={"csrf_token": csrf(client, "/login"), "name": "ola",
                                        "password": "not it at all"})  # fmt: skip
    unknown = client.post("/login", data={"csrf_token": csrf(client, "/login"),
                                          "name": "nobody", "password": PASSWORD})  # fmt: skip
    assert wrong.status_code == unknown.status_code == 401
    assert text_of(wrong.get_data(as_text=True), "login-error") == text_of(
        unknown.get_data(as_text=True), "login-error"
    )
    assert client.get("/").status_code == 302  # not logged in


def test_login_attempts_are_limited(app: Flask) -> None:
    """Given someone guessing passwords, when they try a sixth time within a minute,
    then they are refused (429) even with the right one."""
    client = app.test_client()
    for _ in range(5):
        assert log_in(client, "ola", "guess-number-x") == 401
    assert log_in(client, "ola") == 429


def test_a_failed_login_takes_the_second_the_docs_say() -> None:
    """Given no test's patch, then the delay of a failed login is what security.rst
    says it is."""
    docs = " ".join((ROOT / "docs" / "security.rst").read_text(encoding="utf-8").split())
    assert "a failed one takes a second" in docs
    assert auth_views.FAILED_DELAY == 1.0


def test_a_failed_login_is_slowed_and_a_good_one_is_not(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the delay of a failed login (a second, security.rst says; short here), when
    a login fails, by a wrong password or by a name no one has, then its answer comes
    no sooner than the delay; a login that succeeds is not held back (given a delay far
    longer than a login takes, it answers well within it)."""
    client = app.test_client()

    def answer_time(name: str, password: str, address: str) -> tuple[int, float]:
        form = {"csrf_token": csrf(client, "/login"), "name": name, "password": password}
        started = time.monotonic()
        answer = client.post("/login", data=form, environ_base={"REMOTE_ADDR": address})
        return answer.status_code, time.monotonic() - started

    monkeypatch.setattr(auth_views, "FAILED_DELAY", 0.3)
    for name, password, address in (("ola", "not it at all", "10.9.0.1"),
                                     ("nobody", PASSWORD, "10.9.0.2")):  # fmt: skip
        status, took = answer_time(name, password, address)
        assert status == 401 and took >= 0.3, (name, status, took)

    monkeypatch.setattr(auth_views, "FAILED_DELAY", 30.0)
    status, took = answer_time("ola", PASSWORD, "10.9.0.3")
    assert status == 302 and took < 30.0 / 2, took


def test_a_next_page_on_another_site_is_not_followed(app: Flask) -> None:
    client = app.test_client()
    token = csrf(client, "/login")
    sent = {"csrf_token": token, "name": "ola", "password": PASSWORD, "next": "//evil.example/x"}
    answer = client.post("/login", data=sent)
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/"


def test_a_form_post_needs_this_sessions_token(app: Flask) -> None:
    """Given a job and an operator logged in, when a cancel is posted without a CSRF
    token or with another session's, then it is refused (400) and the job runs on; with
    the page's own token it is cancelled."""
    job_id = submit(app, "http_get", {"url": "http://127.0.0.1:9/x"})
    mine, theirs = app.test_client(), app.test_client()
    log_in(mine, "ola")
    log_in(theirs, "ada")

    assert mine.post(f"/jobs/{job_id}/cancel", data={}).status_code == 400
    other = csrf(theirs, f"/jobs/{job_id}")
    refused = mine.post(f"/jobs/{job_id}/cancel", data={"csrf_token": other})
    assert refused.status_code == 400
    assert "csrf_token" in refused.get_data(as_text=True)
    store = app.extensions["prodinf"].store
    assert store.describe(job_id)["status"] == "queued"

    token = csrf(mine, f"/jobs/{job_id}")
    assert mine.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token}).status_code == 303
    assert store.describe(job_id)["status"] == "cancelled"


def test_a_viewer_sees_no_buttons_and_no_traceback(app: Flask, home: Path) -> None:
    """Given a job whose step failed once (a traceback in its history) and waits to try
    again, then an admin sees the traceback (folded, for operators) and the buttons; a
    viewer sees the messages only, no Cancel or Run again, and the API answers them no
    traceback either."""
    job_id = run(app, "http_get", {"url": "http://127.0.0.1:9/x"})
    store = app.extensions["prodinf"].store
    detail = store.describe(job_id)
    assert any("traceback" in (h["data"] or {}) for h in detail["history"]), detail["history"]

    admin, viewer = app.test_client(), app.test_client()
    log_in(admin, "ada")
    log_in(viewer, "vic")
    seen = page(admin, f"/jobs/{job_id}")
    assert "Traceback (for operators)" in seen and 'id="run-again"' in seen
    shown = page(viewer, f"/jobs/{job_id}")
    assert "Traceback" not in shown and 'id="run-again"' not in shown
    assert "Cancel</button>" not in shown and "Cancel</button>" in seen

    users = Users(store)
    token, _ = users.create_token("vic")
    answer = viewer.get(f"/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert "traceback" not in answer.get_data(as_text=True).lower()


def _serve(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODINF_")}
    env.update(PRODINF_HOME=str(home), PRODINF_SECRET_KEY="x" * 40)
    return subprocess.Popen(
        [sys.executable, "-m", "prodinf.cli", "portal", "--host", "0.0.0.0", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_an_open_portal_beyond_loopback_needs_insecure(home: Path) -> None:
    """Given PRODINF_AUTH unset (none), when the portal is started on 0.0.0.0, then it
    refuses, naming PRODINF_AUTH and what to do; with --insecure it serves, saying so."""
    port = str(free_port())
    refused = _serve(home, "--port", port)
    out, _ = refused.communicate(timeout=60)
    assert refused.returncode == 1, out
    assert "PRODINF_AUTH=none" in out and "PRODINF_AUTH=users" in out and "--insecure" in out
    assert "Traceback" not in out

    served = _serve(home, "--port", port, "--insecure")
    try:
        assert served.stdout is not None
        said: list[str] = []
        while not any("portal at" in line for line in said) and len(said) < 20:
            said.append(served.stdout.readline())
        assert any("INSECURE" in line and "0.0.0.0" in line for line in said), said
        assert any(f"portal at http://0.0.0.0:{port}" in line for line in said), said
    finally:
        served.terminate()
        served.communicate(timeout=30)
