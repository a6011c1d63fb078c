"""Searching the jobs list in a real headless Chromium, driven through chromedriver.

Given the portal on embedded defaults served over real HTTP on loopback, with jobs about
different databases submitted (and cancelled, so the list does not reload itself) through
its API; when a user types a database's name in the search box and presses Search; then
the list shows only the jobs about that database.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import pytest

from tests.integration.browser import WebDriver

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def post(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST ``body`` as JSON over HTTP, as a script would; the answer's JSON."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body or {}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def page_source(browser: WebDriver) -> str:
    """The page's HTML as the browser has it now."""
    source: str = browser.call("GET", f"/session/{browser.session}/source")
    return source


def value_of(browser: WebDriver, css: str) -> str:
    """What the input ``css`` holds now."""
    element = browser.find(css)
    value: str = browser.call("GET", f"/session/{browser.session}/element/{element}/property/value")
    return value


@pytest.mark.slow
def test_typing_a_database_name_in_the_search_box_lists_its_jobs_only(
    live: str, browser: WebDriver
) -> None:
    # Given healthchecks of three databases, two of them of the mouse one
    jobs: dict[str, list[str]] = {}
    for database in (
        "homo_sapiens_core_115_38",
        "mus_musculus_core_115_39",
        "danio_rerio_core_115_11",
        "mus_musculus_core_115_39",
    ):
        uri = f"mysql://ana@db.example.org:3306/{database}"
        created = post(
            f"{live}/api/v1/jobs", {"kind": "healthcheck", "params": {"database_uri": uri}}
        )
        post(f"{created['url']}/cancel")
        jobs.setdefault(database, []).append(created["id"])
    everyone = [job for ids in jobs.values() for job in ids]

    # When the user opens the jobs list, every job is there
    browser.go(f"{live}/")
    assert all(browser.shows(f"#job-{job}") for job in everyone)

    # When they type the mouse database's name in the search box and press Search
    browser.type('#search input[name="q"]', "mus_musculus_core_115_39")
    browser.click('#search button[type="submit"]')
    browser.wait_for("the search's answer", lambda: "q=mus_musculus_core_115_39" in browser.url)

    # Then only its jobs are listed, and the box still holds the name
    shown = re.findall(r'id="job-([0-9a-f-]{36})"', page_source(browser))
    assert sorted(shown) == sorted(jobs["mus_musculus_core_115_39"])
    assert value_of(browser, '#search input[name="q"]') == "mus_musculus_core_115_39"
