"""Live pages in a real headless Chromium: a page open on something running shows what
the store records next in place, within a second, without a reload.

Given the portal on embedded defaults served over real HTTP on loopback, with the
integration kinds loaded and a job of ``it_gated`` (two steps, each held until the test
opens its gate) driven in a thread of this process as a worker would; when the test
opens a gate and the store records the step's end; then the open page shows it within a
second of that record, measured from the step's ``finished_at`` (taken before the
commit, so the figure errs long) to the moment the page's DOM shows it (a
``MutationObserver`` in the page notes ``Date.now()``: the same clock). A mark set in
the page (``window.__noReload``) is still there after: the page was not reloaded.
An event page shows its processes' outcomes and its end the same way. Screenshots of
the dashboard and the job page (and the event page), before and after, go to
``PRODINF_TEST_ARTIFACTS/<test>/`` (``.ci/run`` sets it and prints where), or to the
test's own folder; the latencies measured go there too (``latency.json``).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from prodinf.config import Settings
from tests.embedded import runtime_of, submit
from tests.integration.browser import WebDriver
from tests.integration.conftest import PLUGIN
from tests.loopback import Site
from tests.subscribed import CORE, drive_event, record, subscribed_settings
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.browser]

#: How late a live page may show what the store recorded, in seconds.
BOUND = 1.0
#: How long the test waits for the page at all (a slow machine): over BOUND fails anyway.
PATIENCE = 15.0

#: Sets ``window.__shownAt`` (ms since the epoch) the first time ``shows(document)``
#: holds, checking now and after every change to the page. The caller's first argument
#: is the body of ``shows``.
WATCH = """
const shows = new Function("document", arguments[0]);
window.__shownAt = null;
const note = () => {
  if (window.__shownAt === null && shows(document)) {
    window.__shownAt = Date.now();
    observer.disconnect();
  }
};
const observer = new MutationObserver(note);
observer.observe(document.documentElement, {childList: true, subtree: true, characterData: true});
note();
return null;
"""


@pytest.fixture
def settings(home: Path) -> Settings:
    """Embedded settings with the integration kinds (``it_gated``) loaded and the
    subscriptions of ``tests/subscribed.py``."""
    subscriptions = subscribed_settings(home).subscriptions  # writes them under home
    return Settings(
        home=home,
        reconcile_interval=0.2,
        lease_seconds=3.0,
        redrive_after=30.0,
        sqlite_roots=[home.parent],
        plugins=[PLUGIN],
        subscriptions=subscriptions,
    )


@pytest.fixture
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where the test keeps its screenshots: ``PRODINF_TEST_ARTIFACTS/<test>``, or a
    folder of its own under its tmp_path."""
    root = os.environ.get("PRODINF_TEST_ARTIFACTS")
    folder = (Path(root) if root else tmp_path / "artifacts") / str(request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(browser: WebDriver, path: Path) -> None:
    """Save what the browser shows as a PNG at ``path``; check it is a rendered page."""
    picture = browser.call("GET", f"/session/{browser.session}/screenshot")
    path.write_bytes(base64.b64decode(picture))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000, path  # a rendered page, not a blank one


def text(browser: WebDriver, css: str) -> str | None:
    """The text shown in the first element matching ``css`` (``None``: no such element),
    read in one call in the page: an element found by one WebDriver call may be stale by
    the next, as the live page replaces its content meanwhile."""
    found = browser.call(
        "POST",
        f"/session/{browser.session}/execute/sync",
        {
            "script": "const e = document.querySelector(arguments[0]);"
            " return e === null ? null : e.textContent.replace(/\\s+/g, ' ').trim();",
            "args": [css],
        },
    )
    return None if found is None else str(found)


def watch(browser: WebDriver, shows: str) -> None:
    """Have the page note when ``shows`` (a JavaScript function body of ``document``)
    first holds."""
    browser.call(
        "POST",
        f"/session/{browser.session}/execute/sync",
        {"script": WATCH, "args": [shows]},
    )


def shown_at(browser: WebDriver, what: str) -> float:
    """When the page first showed what ``watch`` waits for, in seconds since the epoch."""
    browser.wait_for(what, lambda: browser.script("return window.__shownAt;") is not None, PATIENCE)
    return float(browser.script("return window.__shownAt;")) / 1000


def badge(css: str, status: str) -> str:
    """A JavaScript expression: the badge in ``css`` reads ``status``."""
    return (
        f"(b => b !== null && b.textContent.trim() === {json.dumps(status)})"
        f"(document.querySelector({json.dumps(css + ' .badge')}))"
    )


def recorded(app: Flask, job_id: str, step: str, status: str) -> dict[str, Any]:
    """Wait until the store holds ``step`` of ``job_id`` in ``status``; the job."""

    def find() -> dict[str, Any] | None:
        job = runtime_of(app).store.describe(job_id)
        row = next(s for s in job["steps"] if s["name"] == step)
        return job if row["status"] == status else None

    found = wait_until(find, PATIENCE, f"{step} {status} in the store")
    assert found is not None
    return found


def finished_at(job: dict[str, Any], step: str | None = None) -> float:
    """When the store recorded the end of ``step`` of ``job`` (or of the job), in seconds
    since the epoch."""
    row = next(s for s in job["steps"] if s["name"] == step) if step else job
    return datetime.fromisoformat(row["finished_at"]).timestamp()


@pytest.fixture
def driven(app: Flask, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A job of ``it_gated`` driven in a thread as a worker would, its first step
    running; its id and the folder of its gates. Both gates are opened at teardown."""
    gates = tmp_path / "gates"
    gates.mkdir()
    job_id = submit(app, "it_gated", {"gates": str(gates)})
    worker = threading.Thread(target=runtime_of(app).runner.drive, args=(job_id,), daemon=True)
    worker.start()
    recorded(app, job_id, "first", "running")
    yield job_id, gates
    for name in ("first", "second"):
        (gates / name).touch()
    worker.join(PATIENCE)


@pytest.mark.slow
def test_a_running_jobs_page_shows_its_next_step_within_a_second(
    app: Flask, live: str, browser: WebDriver, driven: tuple[str, Path], artifacts: Path
) -> None:
    job_id, gates = driven
    latencies: dict[str, float] = {}

    # Given the dashboard and the job's page open while its first step runs
    browser.go(f"{live}/dashboard")
    assert text(browser, "#live") == "Live"
    screenshot(browser, artifacts / "dashboard-before.png")
    browser.go(f"{live}/jobs/{job_id}")
    assert text(browser, "#live") == "Live"
    assert text(browser, "#step-first .badge") == "running"
    assert text(browser, "#step-second .badge") == "pending"
    screenshot(browser, artifacts / "job-before.png")
    browser.script("window.__noReload = 1; return null;")

    # When the first step's gate opens and the store records its end (and the second
    # step running, in the same transaction)
    watch(
        browser,
        f"return {badge('#step-first', 'succeeded')} && {badge('#step-second', 'running')};",
    )
    (gates / "first").touch()
    job = recorded(app, job_id, "first", "succeeded")

    # Then the page shows the step succeeded and the next one running within a second
    # of that record, in place
    latencies["next step"] = shown_at(browser, "the next step shown") - finished_at(job, "first")
    assert browser.script("return window.__noReload;") == 1, "the page was reloaded"
    assert text(browser, ".status-line .badge") == "running"
    screenshot(browser, artifacts / "job-next-step.png")

    # When the second step's gate opens, then the job's end shows within a second too,
    # and the page stops being live
    watch(browser, f"return {badge('.status-line', 'succeeded')};")
    (gates / "second").touch()
    job = recorded(app, job_id, "second", "succeeded")
    latencies["end"] = shown_at(browser, "the job's end shown") - finished_at(job, "second")
    assert browser.script("return window.__noReload;") == 1, "the page was reloaded"
    assert text(browser, "#step-second .badge") == "succeeded"
    browser.wait_for("the page no longer live", lambda: text(browser, "#live") is None)
    screenshot(browser, artifacts / "job-after.png")
    assert not [line for line in browser.console() if "Content Security Policy" in line]

    browser.go(f"{live}/dashboard")
    screenshot(browser, artifacts / "dashboard-after.png")
    (artifacts / "latency.json").write_text(json.dumps(latencies, indent=2) + "\n")
    print(f"store record to DOM: {latencies}")
    late = {what: seconds for what, seconds in latencies.items() if seconds >= BOUND}
    assert not late, f"shown more than {BOUND}s after the store recorded it: {latencies}"


@pytest.mark.slow
def test_an_event_page_shows_its_processes_and_its_end_live(
    app: Flask, live: str, site: Site, browser: WebDriver, artifacts: Path
) -> None:
    # Given a recorded dataset.updated, its page open before its processes start
    event = record(app, type="dataset.updated", dataset=CORE, payload={"base": site.base})
    browser.go(f"{live}/events/{event['id']}")
    assert text(browser, "#live") == "Live"
    assert text(browser, ".status-line .badge") == "queued"
    assert "not started" in (text(browser, "#process-fetch") or "")
    screenshot(browser, artifacts / "event-before.png")
    browser.script("window.__noReload = 1; return null;")
    watch(browser, f"return {badge('.status-line', 'failed')};")

    # When its job starts its three processes and they run (one fails), until the
    # store records the event's job's end
    job = drive_event(app, event["id"])
    assert job["status"] == "failed"

    # Then the page shows each process's outcome and the event's end within a second of
    # that record, in place, and stops being live
    latency = shown_at(browser, "the event's end shown") - finished_at(job)
    assert browser.script("return window.__noReload;") == 1, "the page was reloaded"
    assert text(browser, "#process-fetch .badge") == "succeeded"
    assert text(browser, "#process-fetch-release .badge") == "succeeded"
    assert text(browser, "#process-fetch-missing .badge") == "failed"
    browser.wait_for("the page no longer live", lambda: text(browser, "#live") is None)
    screenshot(browser, artifacts / "event-after.png")
    (artifacts / "latency.json").write_text(json.dumps({"end": latency}, indent=2) + "\n")
    print(f"store record to DOM: {{'end': {latency}}}")
    assert latency < BOUND, f"shown {latency:.3f}s after the store recorded it"
