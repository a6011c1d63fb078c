"""The event pages in a real headless Chromium, driven through chromedriver: a user
previews and records an event, follows it to its processes, and filters the list.

Given the portal on embedded defaults (SQLite store, filesystem broker under the test's
home) served over real HTTP on loopback, whose subscriptions fetch from a loopback
site (``tests/subscribed.py``), with the event's processes driven in this process as
workers would; when a browser uses the pages; then they do what a user needs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from flask import Flask

from prodinf.config import Settings
from prodinf.store.events import list_events
from tests.embedded import runtime_of
from tests.integration.browser import WebDriver, chromium
from tests.loopback import Site
from tests.subscribed import CORE, drive_event, record, subscribed_settings

pytestmark = [pytest.mark.integration, pytest.mark.browser]

UUID = "[0-9a-f-]{36}"


@pytest.fixture
def settings(home: Path) -> Settings:
    """The portal's settings: embedded, with the subscriptions of ``tests/subscribed.py``."""
    return subscribed_settings(home)


@pytest.mark.slow
def test_a_user_previews_records_and_follows_an_event(
    app: Flask, live: str, site: Site, browser: WebDriver, tmp_path: Path
) -> None:
    # Given no event yet: the list says how to record one, and its link opens the form
    browser.go(f"{live}/events")
    assert "No events." in browser.text("#events-empty")
    browser.click("#events-empty a")
    browser.wait_for("the form", lambda: browser.url == f"{live}/events/new")

    # When the user types an event whose payload is not JSON and previews it
    browser.type("#input-type", "dataset.updated")
    browser.type("#input-dataset", CORE)
    browser.type("#input-payload", "{base: here}")
    browser.click("#preview-button")
    # Then the error sits next to the payload, and what they typed is kept
    browser.wait_for(
        "the payload error", lambda: "not valid JSON" in browser.text("#error-payload")
    )
    assert not browser.shows("#preview")

    # When they correct it and preview again
    browser.type("#input-payload", json.dumps({"base": site.base}))
    browser.click("#preview-button")
    # Then they see each process it would start, its params rendered from the event,
    # and what the naming rules read in the dataset; nothing is recorded
    browser.wait_for("the preview", lambda: "fetch-release" in browser.text("#matches"))
    params = json.loads(browser.text("#match-fetch-release-params"))
    assert params["url"] == f"{site.base}/ok?release=115"
    assert browser.text("#match-fetch td:nth-child(3)") == ""  # after nothing
    assert browser.text("#match-fetch-release td:nth-child(3)") == "fetch"
    assert "release 115" in browser.text("#preview-dataset")
    assert list_events(runtime_of(app).store)[1] == 0

    # When they record it
    browser.click("#record-button")
    # Then they land on the event, recorded, its processes not started yet
    event_page = re.compile(rf"{re.escape(live)}/events/({UUID})")
    browser.wait_for("the event page", lambda: bool(event_page.fullmatch(browser.url)))
    found = event_page.fullmatch(browser.url)
    assert found
    event_id = found.group(1)
    assert browser.text(".flash") == "Event recorded."
    assert browser.text(".status-line .badge") == "queued"
    assert "not started" in browser.text("#process-fetch")
    assert json.loads(browser.text("#event-payload")) == {"base": site.base}

    # When its processes run and the page is opened again
    job = drive_event(app, event_id)
    assert job["status"] == "failed"
    browser.go(f"{live}/events/{event_id}")
    # Then it shows each process's status, and the event failed
    assert browser.text(".status-line .badge") == "failed"
    assert browser.text("#process-fetch .badge") == "succeeded"
    assert browser.text("#process-fetch-release .badge") == "succeeded"
    assert browser.text("#process-fetch-missing .badge") == "failed"
    # And the link to a process's job opens that job, which says why it failed
    browser.click("#process-fetch-missing td.id a")
    job_page = re.compile(rf"{re.escape(live)}/jobs/({UUID})")
    browser.wait_for("the job page", lambda: bool(job_page.fullmatch(browser.url)))
    assert browser.text(".status-line .badge") == "failed"
    assert "answered 404" in browser.text("#job-error")

    # And the event's page renders as a picture, not a blank page
    shot = tmp_path / "event.png"
    chromium(tmp_path, f"--screenshot={shot}", f"{live}/events/{event_id}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000


@pytest.mark.slow
def test_the_events_list_shows_events_and_its_filters_work(
    app: Flask, live: str, site: Site, browser: WebDriver
) -> None:
    # Given a dataset.updated of a core database that failed, and a newer
    # dataset.created whose process was started with it
    failed = record(app, type="dataset.updated", dataset=CORE, payload={"base": site.base})
    drive_event(app, failed["id"])
    queued = record(app, type="dataset.created", dataset="other_db", payload={"base": site.base})
    old_row, new_row = f"#event-{failed['id']}", f"#event-{queued['id']}"

    # When the user opens the events list, then both show, with dataset and status
    browser.go(f"{live}/events")
    assert "release 115" in browser.text(old_row)
    assert browser.text(f"{old_row} .badge") == "failed"
    assert browser.text(f"{new_row} .badge") == "waiting"

    # When they filter by status, then only the failed one shows
    browser.click('select[name="status"] option[value="failed"]')
    browser.click(".filters button")
    browser.wait_for("the status filter", lambda: "status=failed" in browser.url)
    assert browser.shows(old_row)
    assert not browser.shows(new_row)

    # When they add a type no failed event has, then none shows, and the page says so
    browser.type('.filters input[name="type"]', "dataset.created")
    browser.click(".filters button")
    browser.wait_for("the type filter", lambda: "type=dataset.created" in browser.url)
    assert "No events match these filters." in browser.text("#events-empty")

    # When they clear the filters and pick a dataset, then only its event shows
    browser.click('.filters a[href="/events"]')
    browser.wait_for("the cleared list", lambda: browser.url == f"{live}/events")
    browser.type('.filters input[name="dataset"]', "other_db")
    browser.click(".filters button")
    browser.wait_for("the dataset filter", lambda: "dataset=other_db" in browser.url)
    assert browser.shows(new_row)
    assert not browser.shows(old_row)

    # And an event's link opens its page
    browser.click(f"{new_row} td.id a")
    browser.wait_for("the event page", lambda: browser.url == f"{live}/events/{queued['id']}")
    assert "dataset.created" in browser.text("h1")
