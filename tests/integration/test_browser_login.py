"""Logging in and submitting a form in a real headless Chromium (``PRODINF_AUTH=users``).

Given the portal with authentication on, served over real HTTP, and a submitter made
as an admin makes one; when they open the new-job page, they are sent to the login;
after logging in they land on the page they asked for, submit a job, and see it as
theirs; a viewer sees no way to submit. In Swagger UI, a call without a token is
refused (401), and the same call after "Authorize" with a token goes through.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from prodinf.config import Settings
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.store import upgrade
from prodinf.store.users import Users
from tests.integration.browser import SWAGGER_ANSWER, WebDriver, run_job_list_in_swagger, serve
from tests.loopback import Site

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PASSWORD = "sue-has-a-long-password"


@pytest.fixture
def secured(home: Path) -> Iterator[Flask]:
    app = create_app(Settings(home=home, auth="users"))
    runtime: Runtime = app.extensions["prodinf"]
    upgrade(runtime.store)
    Users(runtime.store).add("sue", "submitter", PASSWORD)
    Users(runtime.store).add("vic", "viewer", PASSWORD)
    yield app
    runtime.close()


@pytest.fixture
def secured_live(secured: Flask) -> Iterator[str]:
    yield from serve(secured)


def log_in(browser: WebDriver, name: str) -> None:
    browser.type("#input-name", name)
    browser.type("#input-password", PASSWORD)
    browser.click("#login button.primary")


def test_a_submitter_logs_in_and_submits_a_job_as_themselves(
    secured: Flask, secured_live: str, browser: WebDriver, site: Site
) -> None:
    browser.go(f"{secured_live}/jobs/new?kind=http_get")
    browser.wait_for("the login page", lambda: "/login" in browser.url)

    browser.type("#input-name", "sue")
    browser.type("#input-password", "not her password")
    browser.click("#login button.primary")
    browser.wait_for("the refusal", lambda: browser.shows("#login-error"))

    log_in(browser, "sue")
    browser.wait_for("the form", lambda: browser.url.endswith("/jobs/new?kind=http_get"))
    assert "sue" in browser.text("#who")

    browser.type('[name="params.url"]', f"{site.base}/ok")
    browser.click("button.primary")
    job_page = re.compile(rf"{re.escape(secured_live)}/jobs/([0-9a-f-]{{36}})")
    browser.wait_for("the job page", lambda: bool(job_page.fullmatch(browser.url)))
    match = job_page.fullmatch(browser.url)
    assert match
    assert browser.text(".flash") == "Job submitted."
    store = secured.extensions["prodinf"].store
    assert store.describe(match.group(1))["submitted_by"] == "sue"
    assert browser.shows("button.danger")  # her own job: she may cancel it

    browser.click("#who button")  # log out
    browser.wait_for("the login page", lambda: "/login" in browser.url)


def test_a_viewer_sees_no_way_to_submit(secured_live: str, browser: WebDriver) -> None:
    browser.go(f"{secured_live}/")
    browser.wait_for("the login page", lambda: "/login" in browser.url)
    log_in(browser, "vic")
    browser.wait_for("the jobs", lambda: "/login" not in browser.url)
    assert "vic" in browser.text("#who")
    assert "New job" not in browser.text("header")
    assert not browser.shows('a[href="/jobs/new"]')


def test_swagger_ui_authorize_takes_a_token_and_the_call_goes_through(
    secured: Flask, secured_live: str, browser: WebDriver
) -> None:
    # Given a viewer's API token, as `prodinf token create --user vic` prints it
    token, _ = Users(secured.extensions["prodinf"].store).create_token("vic", read_only=True)

    # When the user opens the API docs and runs GET /jobs without a token
    browser.go(f"{secured_live}/api/docs")
    run_job_list_in_swagger(browser)
    # Then the API asks for the token
    assert browser.text(SWAGGER_ANSWER).split("\n")[0] == "401"

    # When they give it through "Authorize", as the scheme's description says
    browser.click(".auth-wrapper .authorize")
    browser.wait_for("the Authorize dialog", lambda: browser.shows(".auth-container input"))
    browser.type(".auth-container input", f"Bearer {token}")
    browser.click(".auth-btn-wrapper .authorize")
    browser.wait_for("the token taken", lambda: browser.shows(".auth-btn-wrapper .btn-done"))
    browser.click(".auth-btn-wrapper .btn-done")
    # and run the call again
    browser.click(".execute")

    # Then it goes through with the token: 200 and the (empty) list
    browser.wait_for(
        "the answer with the token", lambda: browser.text(SWAGGER_ANSWER).startswith("200")
    )
    assert '"total": 0' in browser.text(".live-responses-table .microlight")
