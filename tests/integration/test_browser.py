"""The portal's pages in a real headless Chromium: rendered (``--dump-dom``, screenshots)
and used (a form filled in and submitted through chromedriver).

Given the portal on embedded defaults served over real HTTP on loopback, with jobs put
in their states for real (driven in this process against a loopback HTTP server) and
mail in the outbox; when a browser opens its pages; then it shows what a user needs,
escapes what a job or a mail holds, and its forms work.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy import text as sa_text

from prodinf.config import Settings
from prodinf.mail import deliver, outbox_name, render_url_report
from tests.embedded import run, runtime_of
from tests.integration.browser import WebDriver, chromium
from tests.loopback import Site
from tests.mails import PASSWORD, URL, a_mail
from tests.pages import text_of
from tests.sample_data import build_core_like

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.mark.slow
def test_browser_renders_the_jobs_and_a_job(
    app: Flask, live: str, site: Site, tmp_path: Path
) -> None:
    # Given a job that succeeded and one that failed
    good = run(app, "http_get", {"url": f"{site.base}/ok"}, submitted_by="alice")
    bad = run(app, "http_get", {"url": f"{site.base}/missing"}, submitted_by="bob")

    # When the browser opens the jobs list, then it shows both with their statuses
    dom = chromium(tmp_path, "--dump-dom", f"{live}/")
    assert re.search(rf'<tr id="job-{good}" data-status="succeeded">', dom)
    assert re.search(rf'<tr id="job-{bad}" data-status="failed">', dom)
    assert "answered 404" in text_of(dom, f"job-{bad}")

    # When it opens the failed job, then it shows the error and the history
    dom = chromium(tmp_path, "--dump-dom", f"{live}/jobs/{bad}")
    assert "answered 404" in text_of(dom, "job-error")
    assert "job.failed" in text_of(dom, "history")

    # And both pages render as pictures, not blank pages
    for name, path in (("jobs", "/"), ("job", f"/jobs/{bad}")):
        shot = tmp_path / f"{name}.png"
        chromium(tmp_path, f"--screenshot={shot}", f"{live}{path}")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 10_000  # a rendered page, not a blank one


@pytest.mark.slow
def test_browser_submits_the_form_and_cancels_the_job(
    app: Flask, live: str, site: Site, browser: WebDriver
) -> None:
    # Given the new-job form in a browser
    browser.go(f"{live}/jobs/new?kind=http_get")
    # When the user submits it without a URL, the page says so next to the field
    browser.type('[name="params.timeout"]', "9")
    browser.click("button.primary")
    url_error = '[id="field-params.url"] .field-error'
    browser.wait_for("the url error", lambda: "Field required" in browser.text(url_error))
    # When they fill it in and submit again
    browser.type('[name="params.url"]', f"{site.base}/ok")
    browser.click("button.primary")
    # Then they land on the new job, queued, with what they typed
    job_page = re.compile(rf"{re.escape(live)}/jobs/([0-9a-f-]{{36}})")
    browser.wait_for("the job page", lambda: bool(job_page.fullmatch(browser.url)))
    match = job_page.fullmatch(browser.url)
    assert match
    assert browser.text(".flash") == "Job submitted."
    assert browser.text(".status-line .badge") == "queued"
    assert json.loads(browser.text("#job-params")) == {"url": f"{site.base}/ok", "timeout": 9.0}
    # And the Cancel button cancels it
    browser.click("button.danger")
    browser.wait_for("the cancel", lambda: browser.text(".flash") == "Job cancelled.")
    assert browser.text(".status-line .badge") == "cancelled"
    assert runtime_of(app).store.describe(match.group(1))["status"] == "cancelled"


@pytest.mark.slow
def test_browser_picks_two_checks_and_a_notify_address(
    app: Flask, live: str, browser: WebDriver, tmp_path: Path
) -> None:
    # Given the new-job form for a healthcheck in a browser
    browser.go(f"{live}/jobs/new?kind=healthcheck")
    uri = f"sqlite:///{tmp_path}/homo_sapiens_core_115_38.sqlite"  # in the test's folder
    browser.type('[name="params.database_uri"]', uri)
    # When the user ticks two of the catalogue's checks and types an address to mail
    for check in ("reachable", "meta_keys"):
        browser.click(f'input[name="params.names"][value="{check}"]')
    browser.type('[name="notify.email"]', "ada@example.org")
    browser.click("button.primary")
    # Then the new job's page shows those two checks in its params, and whom it mails
    job_page = re.compile(rf"{re.escape(live)}/jobs/([0-9a-f-]{{36}})")
    browser.wait_for("the job page", lambda: bool(job_page.fullmatch(browser.url)))
    params = json.loads(browser.text("#job-params"))
    assert params["names"] == ["reachable", "meta_keys"]
    assert params["database_uri"] == uri
    assert browser.text("#job-notify") == "ada@example.org"
    match = job_page.fullmatch(browser.url)
    assert match
    assert runtime_of(app).store.describe(match.group(1))["notify"] == {
        "email": ["ada@example.org"]
    }


@pytest.mark.slow
def test_browser_shows_every_bad_field_at_once(live: str, browser: WebDriver) -> None:
    # Given the healthcheck form with a check ticked, no database and an address without @
    browser.go(f"{live}/jobs/new?kind=healthcheck")
    browser.click('input[name="params.names"][value="foreign_keys"]')
    browser.type('[name="notify.email"]', "nobody")
    # When it is submitted
    browser.click("button.primary")
    # Then both inputs say what is wrong, and the ticked check and the address are kept
    uri_error = '[id="error-params.database_uri"]'
    browser.wait_for("the errors", lambda: "Field required" in browser.text(uri_error))
    assert "'nobody' is not an email address" in browser.text('[id="error-notify.email"]')
    assert browser.selected('input[name="params.names"][value="foreign_keys"]')
    assert not browser.selected('input[name="params.names"][value="reachable"]')
    assert browser.text('[name="notify.email"]') == "nobody"


@pytest.mark.slow
def test_browser_renders_the_outbox(settings: Settings, live: str, tmp_path: Path) -> None:
    # Given a summary mail in the outbox, whose document holds markup and whose URL a
    # password
    subject, text, html = render_url_report(
        URL, "done", {"status": "done", "comment": "<script>alert(1)</script>"}, "complete", None
    )
    mail = a_mail(subject=subject, text=text, html=html)
    deliver(mail, settings)
    name = outbox_name(mail.message_id)

    # When the browser opens the outbox, then the mail is listed, without the password
    dom = chromium(tmp_path, "--dump-dom", f"{live}/outbox")
    row = re.search(rf'<tr id="mail-{re.escape(name)}">(.*?)</tr>', dom, re.S)
    assert row, dom[-3000:]
    assert "status.example.org/jobs/42: complete" in row.group(1)
    assert "ada@example.org" in row.group(1)
    assert PASSWORD not in dom

    # When it opens the mail, then its text shows, the markup escaped, never run
    dom = chromium(tmp_path, "--dump-dom", f"{live}/outbox/{name}")
    text_block = re.search(r'<pre class="json mail-text" id="mail-text">(.*?)</pre>', dom, re.S)
    assert text_block, dom[-3000:]
    assert "has finished." in text_block.group(1)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text_block.group(1)
    assert "<script>alert(1)" not in dom


@pytest.mark.slow
def test_browser_shows_a_failed_healthchecks_report(
    app: Flask, live: str, browser: WebDriver, tmp_path: Path
) -> None:
    """Given a healthcheck of a core database with orphan rows (a transcript whose gene
    is gone), when a user opens its job page in the browser, then the report's table
    shows each check with its outcome, the failed one first and open with its count and
    example rows; a traceback is only behind a closed "for operators" summary."""
    uri = f"sqlite:///{tmp_path / 'homo_sapiens_core_115_38'}.sqlite"
    build_core_like(uri, genes=20, release=115)
    engine = create_engine(uri)
    with engine.begin() as conn:
        conn.execute(sa_text("DELETE FROM gene WHERE gene_id IN (1, 2, 3)"))
    engine.dispose()
    job_id = run(app, "healthcheck", {"database_uri": uri, "groups": ["core", "generic"]})

    browser.go(f"{live}/jobs/{job_id}")

    assert browser.text(".status-line .badge") == "failed"
    rows = browser.texts("#report table.checks > tbody > tr")
    outcomes = ["FAILED" in row for row in rows]
    assert outcomes[0] and not all(outcomes), rows  # failed first, passed ones after
    failed = browser.text("#report tr.failed")
    assert "transcript" in failed and "gene" in failed, failed
    examples = browser.texts("#report tr.failed details[open] table.examples tr")
    assert len(examples) >= 2, examples  # a header and at least one orphan row
    shown = browser.text("main")  # what is visible: a closed <details> shows its summary
    assert 'File "' not in shown and "Traceback (for operators)" in shown


@pytest.mark.slow
def test_the_dashboard_in_the_browser(
    app: Flask, live: str, browser: WebDriver, site: Site, tmp_path: Path
) -> None:
    """Given jobs that succeeded and one that failed, when the dashboard is opened in
    Chromium, then it shows the queues, the last hour's chart with a bar per outcome, the
    jobs by status and the failure (linked), under the page's CSP; it is live; its
    screenshot is kept (and copied to PRODINF_TEST_SCREENSHOTS when set: docs/)."""
    for _ in range(4):
        run(app, "http_get", {"url": f"{site.base}/ok"})
    bad = run(app, "http_get", {"url": f"{site.base}/missing"})

    browser.go(f"{live}/dashboard")

    assert browser.text("h1") == "Dashboard"
    assert browser.text("#live") == "Live"
    assert "jobs" in browser.text("#queue-jobs")
    assert len(browser.texts("#chart rect.bar-succeeded")) >= 1
    assert len(browser.texts("#chart rect.bar-failed")) == 1
    assert browser.text("#status-succeeded").endswith("4")
    browser.click(f'#failures a[href="/jobs/{bad}"]')
    browser.wait_for("the failed job", lambda: browser.url.endswith(f"/jobs/{bad}"))
    assert not [line for line in browser.console() if "Content Security Policy" in line]

    browser.go(f"{live}/dashboard")
    shot = tmp_path / "dashboard.png"
    picture = browser.call("GET", f"/session/{browser.session}/screenshot")
    shot.write_bytes(base64.b64decode(picture))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    keep = os.environ.get("PRODINF_TEST_SCREENSHOTS")
    if keep:
        (Path(keep) / "dashboard.png").write_bytes(shot.read_bytes())
