"""The handover pages in a real headless Chromium, driven through chromedriver: a user
hands a database over from the form, is refused a bad contact next to the field, follows
the handover to every stage succeeded, and filters the list by status.

Given the portal on embedded defaults (SQLite store, filesystem broker under the test's
home) served over real HTTP on loopback, a handover configuration staging to a SQLite
folder, and a production "server" that is a folder of SQLite core databases, with the
handover's jobs driven in this process as workers would; when a browser uses the pages;
then they do what a user needs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask

from prodinf.config import Settings
from prodinf.kinds.handover import Handovers
from prodinf.store.handovers import list_handovers
from tests.embedded import runtime_of
from tests.integration.browser import WebDriver, chromium
from tests.integration.test_browser_live import BOUND, badge, finished_at, shown_at, text, watch
from tests.unit.test_handover import NAME
from tests.unit.test_handover_pages import drive_handover, handover_settings, production

pytestmark = [pytest.mark.integration, pytest.mark.browser]

UUID = "[0-9a-f-]{36}"
MOUSE = "mus_musculus_core_115_39"


@pytest.fixture
def settings(home: Path, tmp_path: Path) -> Settings:
    """Embedded settings handing core databases of release 115 over to a SQLite folder."""
    return handover_settings(home, tmp_path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The production server: a folder holding two SQLite core databases."""
    return production(tmp_path, NAME, MOUSE)


@pytest.mark.slow
def test_a_user_hands_a_database_over_and_follows_it_to_the_end(
    app: Flask, live: str, folder: Path, browser: WebDriver, tmp_path: Path
) -> None:
    # Given no handover yet: the list says so, and its link opens the form
    browser.go(f"{live}/handovers")
    assert "No handovers." in browser.text("#handovers-empty")
    browser.click("#handovers-empty a")
    browser.wait_for("the form", lambda: browser.url == f"{live}/handovers/new")

    # When the user gives the server and lists its databases
    browser.type("#input-server_uri", f"sqlite:///{folder}")
    browser.click("#list-button")
    # Then each database shows with its type and release, to choose from
    browser.wait_for("the databases", lambda: browser.shows(f"#choose-{NAME}"))
    row = browser.text(f"#db-{NAME}")
    assert "core" in row and "115" in row
    assert browser.shows(f"#db-{MOUSE}")

    # When they choose one, give a contact that is not an address, and submit
    browser.click(f"#choose-{NAME}")
    browser.type("#input-contact", "ada at example")
    browser.type("#input-comment", "new genebuild")
    browser.click("#submit-button")
    # Then the refusal sits next to the contact, and what they chose is kept
    browser.wait_for(
        "the contact error", lambda: "not an email address" in browser.text("#error-contact")
    )
    assert not browser.shows("#error-database")
    assert browser.call(
        "GET", f"/session/{browser.session}/element/{browser.find(f'#choose-{NAME}')}/selected"
    )
    assert list_handovers(runtime_of(app).store)[1] == 0

    # When they correct it and submit again
    browser.type("#input-contact", "ada@example.org")
    browser.click("#submit-button")
    # Then they land on the handover, queued, with Stop offered
    handover_page = re.compile(rf"{re.escape(live)}/handovers/({UUID})")
    browser.wait_for("the handover page", lambda: bool(handover_page.fullmatch(browser.url)))
    found = handover_page.fullmatch(browser.url)
    assert found
    token = found.group(1)
    assert browser.text(".flash") == f"Handover of {NAME} submitted."
    assert browser.text("#handover-status .badge") == "queued"
    assert browser.shows("#stop-button")

    # When its jobs run and the page is opened again
    detail = drive_handover(app, token)
    assert detail["status"] == "succeeded", detail
    browser.go(f"{live}/handovers/{token}")
    # Then every stage shows succeeded, with its job, and the handover succeeded
    assert browser.text("#handover-status .badge") == "succeeded"
    for stage in ("healthcheck", "copy", "metadata", "events"):
        assert browser.text(f"#stage-{stage} .badge") == "succeeded", stage
    assert "ada@example.org" in browser.text("#handover-contact")
    assert browser.shows("#restart-form") and not browser.shows("#stop-button")
    assert detail["events"]
    assert browser.shows("#events a")
    # And the healthcheck's job link opens that job, succeeded
    browser.click("#stage-healthcheck a.stage-job")
    job_page = re.compile(rf"{re.escape(live)}/jobs/({UUID})")
    browser.wait_for("the job page", lambda: bool(job_page.fullmatch(browser.url)))
    assert browser.text("h1").startswith("healthcheck")
    assert browser.text(".status-line .badge") == "succeeded"

    # And the handover's page renders as a picture, not a blank page
    shot = tmp_path / "handover.png"
    chromium(tmp_path, f"--screenshot={shot}", f"{live}/handovers/{token}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000


@pytest.mark.slow
def test_the_handovers_list_filters_by_status(
    app: Flask, live: str, folder: Path, browser: WebDriver
) -> None:
    # Given a handover that succeeded and a newer one still queued
    rt = runtime_of(app)
    service = Handovers(rt.store, rt.registry, rt.settings, rt.publish)
    common = {"contact": "ada@example.org", "comment": "build"}
    done = service.submit({"src_uri": f"sqlite:///{folder / NAME}.sqlite", **common})["token"]
    drive_handover(app, done)
    queued = service.submit({"src_uri": f"sqlite:///{folder / MOUSE}.sqlite", **common})["token"]
    done_row, queued_row = f"#handover-{done}", f"#handover-{queued}"

    # When the user opens the list, then both show with their status
    browser.go(f"{live}/handovers")
    assert browser.text(f"{done_row} .badge") == "succeeded"
    assert browser.text(f"{queued_row} .badge") == "queued"

    # When they filter by status, then only the handovers of that status show
    browser.click('select[name="status"] option[value="succeeded"]')
    browser.click(".filters button")
    browser.wait_for("the status filter", lambda: "status=succeeded" in browser.url)
    assert browser.shows(done_row)
    assert not browser.shows(queued_row)
    browser.click('select[name="status"] option[value="failed"]')
    browser.click(".filters button")
    browser.wait_for("the failed filter", lambda: "status=failed" in browser.url)
    assert "No handovers match these filters." in browser.text("#handovers-empty")

    # When they clear the filters, then both show again, and a row's link opens it
    browser.click('.filters a[href="/handovers"]')
    browser.wait_for("the cleared list", lambda: browser.url == f"{live}/handovers")
    assert browser.shows(done_row) and browser.shows(queued_row)
    browser.click(f"{queued_row} td.id a")
    browser.wait_for("the handover page", lambda: browser.url == f"{live}/handovers/{queued}")
    assert MOUSE in browser.text("h1")

    # When they stop it, then it says so and offers a restart; when they restart it from
    # healthcheck, then it is queued again
    browser.click("#stop-button")
    browser.wait_for("the stop", lambda: browser.text(".flash") == "Handover stopped.")
    assert browser.url == f"{live}/handovers/{queued}"
    assert browser.text("#handover-status .badge") == "stopped"
    browser.click('#restart-from option[value="healthcheck"]')
    browser.click("#restart-button")
    browser.wait_for(
        "the restart", lambda: browser.text(".flash") == "Handover restarted from healthcheck."
    )
    assert browser.text("#handover-status .badge") == "queued"
    assert drive_handover(app, queued)["status"] == "succeeded"


@pytest.mark.slow
def test_a_handover_page_shows_its_stages_and_its_end_live(
    app: Flask, live: str, folder: Path, browser: WebDriver
) -> None:
    """Given a handover's page open while it is queued, when its jobs run to the end, then
    the page shows every stage and the handover succeeded in place, within a second of
    the store recording its job's end, and stops being live (the way
    ``test_browser_live`` measures it)."""
    rt = runtime_of(app)
    service = Handovers(rt.store, rt.registry, rt.settings, rt.publish)
    handover = {"src_uri": f"sqlite:///{folder / NAME}.sqlite", "contact": "ada@example.org"}
    token = service.submit({**handover, "comment": "live"})["token"]
    browser.go(f"{live}/handovers/{token}")
    assert text(browser, "#live") == "Live"
    assert text(browser, "#handover-status .badge") == "queued"
    browser.script("window.__noReload = 1; return null;")
    watch(browser, f"return {badge('#handover-status', 'succeeded')};")

    detail = drive_handover(app, token)
    assert detail["status"] == "succeeded", detail

    latency = shown_at(browser, "the handover's end shown") - finished_at(rt.store.describe(token))
    assert browser.script("return window.__noReload;") == 1, "the page was reloaded"
    for stage in ("healthcheck", "copy", "metadata", "events"):
        assert text(browser, f"#stage-{stage} .badge") == "succeeded", stage
    browser.wait_for("the page no longer live", lambda: text(browser, "#live") is None)
    print(f"store record to DOM: {{'end': {latency}}}")
    assert latency < BOUND, f"shown {latency:.3f}s after the store recorded it"


@pytest.mark.slow
def test_a_bulk_page_shows_a_handover_end_live(
    app: Flask, live: str, folder: Path, browser: WebDriver
) -> None:
    """Given a bulk of two handovers, its page open while both are queued, when they run
    to their end, then the page shows each succeeded in place (the one it watches within a
    second of the store recording its job's end) and stops being live."""
    rt = runtime_of(app)
    service = Handovers(rt.store, rt.registry, rt.settings, rt.publish)
    made = service.bulk(
        {
            "server_uri": f"sqlite:///{folder}",
            "databases": [NAME, MOUSE],
            "contact": "ada@example.org",
            "comment": "live",
        }
    )
    token = next(a["token"] for a in made["answers"] if a["database"] == NAME)
    browser.go(f"{live}/handovers/bulks/{made['id']}")
    assert text(browser, "#live") == "Live"
    assert text(browser, f"#answer-{NAME} .badge") == "queued"
    browser.script("window.__noReload = 1; return null;")
    watch(browser, f"return {badge(f'#answer-{NAME}', 'succeeded')};")

    assert drive_handover(app, token)["status"] == "succeeded"

    latency = shown_at(browser, "the handover's end shown") - finished_at(rt.store.describe(token))
    assert browser.script("return window.__noReload;") == 1, "the page was reloaded"
    assert text(browser, f"#answer-{MOUSE} .badge") == "succeeded"  # driven meanwhile
    browser.wait_for("the page no longer live", lambda: text(browser, "#live") is None)
    print(f"store record to DOM: {{'end': {latency}}}")
    assert latency < BOUND, f"shown {latency:.3f}s after the store recorded it"
