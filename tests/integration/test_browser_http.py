"""The portal under its Content-Security-Policy, in a real headless Chromium.

Given the portal on embedded defaults served over real HTTP on loopback, with a job in
it; when a browser opens every page, and Swagger UI at /api/docs; then the browser
refuses nothing (no "Refused to ..." in its console: no inline script or style, nothing
from elsewhere), the pages are styled, and Swagger UI runs a call against the API.
"""

from __future__ import annotations

import pytest
from flask import Flask

from tests.embedded import run
from tests.integration.browser import SWAGGER_ANSWER, WebDriver, run_job_list_in_swagger
from tests.loopback import Site

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PAGES = [
    "/",
    "/jobs/new",
    "/jobs/new?kind=http_get",
    "/notifications/new",
    "/events",
    "/events/new",
    "/handovers",
    "/handovers/new",
    "/handovers/bulk",
    "/datasets",
    "/outbox",
    "/login",
]


def refusals(browser: WebDriver) -> list[str]:
    """What the browser's console said the Content-Security-Policy refused."""
    return [line for line in browser.console() if "Content Security Policy" in line]


@pytest.mark.slow
def test_every_page_works_under_the_content_security_policy(
    app: Flask, live: str, site: Site, browser: WebDriver
) -> None:
    # Given a job, so its page has its forms and history
    job = run(app, "http_get", {"url": f"{site.base}/missing"}, submitted_by="alice")

    for path in [*PAGES, f"/jobs/{job}"]:
        # When the browser opens the page
        browser.go(f"{live}{path}")
        # Then the policy refused nothing on it, and the stylesheet styled it
        assert refusals(browser) == [], path
        assert browser.css("header.topbar nav", "display") == "flex", path


@pytest.mark.slow
def test_swagger_ui_runs_under_the_content_security_policy(
    app: Flask, live: str, site: Site, browser: WebDriver
) -> None:
    # Given a job in the portal
    run(app, "http_get", {"url": f"{site.base}/ok"})

    # When the browser opens the API docs
    browser.go(f"{live}/api/docs")

    # Then Swagger UI (its own scripts, started from the portal's static file) shows
    # the API, and the policy refused nothing
    browser.wait_for("Swagger UI", lambda: browser.text(".info .title").startswith("prodinf"))
    assert refusals(browser) == []

    # When the user opens GET /jobs, tries it out and executes it
    run_job_list_in_swagger(browser)

    # Then the call reaches the API (connect-src 'self') and its answer is shown
    status, *described = browser.text(SWAGGER_ANSWER).split("\n")
    assert status == "200"
    assert described != ["Undocumented"]  # the OpenAPI document describes the answer
    assert '"total": 1' in browser.text(".live-responses-table .microlight")
    assert refusals(browser) == []
