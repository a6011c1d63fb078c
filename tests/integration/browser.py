"""A real headless browser for the page tests: Chromium from Debian, run once per page
(``chromium``) or driven through chromedriver (``WebDriver``), and the app served over
real HTTP on loopback (``serve``). Tests that need it skip on a laptop without it and
fail in CI (``tests.gates.need``)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flask import Flask

from prodinf.portal.hardening import make_server
from tests.gates import need
from tests.loopback import free_port
from tests.waiting import wait_until

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "CHROMIUM_FLAGS",
    "WebDriver",
    "chromium",
    "driven_chromium",
    "need",
    "serve",
]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def serve(app: Flask, port: int = 0) -> Iterator[str]:
    """Serve ``app`` over real HTTP on 127.0.0.1 (on ``port``, or one the kernel picks),
    in a thread, by the server ``prodinf up`` uses; yields its base URL."""
    server = make_server("127.0.0.1", port, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(5)


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]


def chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium once with ``args``; its stdout."""
    need(CHROMIUM, "chromium")
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    done = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


class WebDriver:
    """Just enough of the W3C WebDriver protocol, spoken to chromedriver over HTTP."""

    ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = ""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        request = urllib.request.Request(
            f"{self.base}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as exc:
            with exc:
                raise AssertionError(f"{method} {path}: {exc.read().decode()[:2000]}") from None

    def start(self, profile: Path) -> None:
        args = [a for a in CHROMIUM_FLAGS if a != "--headless"]
        options = {
            "binary": CHROMIUM,
            "args": ["--headless=new", *args, f"--user-data-dir={profile}"],
        }
        capabilities = {
            "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": options,
                "goog:loggingPrefs": {"browser": "ALL"},  # for console()
            }
        }
        self.session = self.call("POST", "/session", {"capabilities": capabilities})["sessionId"]

    def quit(self) -> None:
        if self.session:
            self.call("DELETE", f"/session/{self.session}")

    def go(self, url: str) -> None:
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def fresh(self, act: Callable[[], Any]) -> Any:
        """What ``act`` (finding an element, then acting on it) returns, done again when
        the element went stale in between: a live page puts new content in place of
        its old one while it runs (``static/live.js``)."""
        for _ in range(4):
            try:
                return act()
            except AssertionError as exc:
                if "stale element reference" not in str(exc):
                    raise
        return act()

    def find(self, css: str) -> str:
        found = self.call(
            "POST", f"/session/{self.session}/element", {"using": "css selector", "value": css}
        )
        element: str = found[self.ELEMENT]
        return element

    def shows(self, css: str) -> bool:
        """Whether the page holds an element matching ``css``."""
        try:
            self.find(css)
        except AssertionError:
            return False
        return True

    def type(self, css: str, text: str) -> None:
        def act() -> None:
            element = self.find(css)
            self.call("POST", f"/session/{self.session}/element/{element}/clear")
            self.call("POST", f"/session/{self.session}/element/{element}/value", {"text": text})

        self.fresh(act)

    def click(self, css: str) -> None:
        self.fresh(
            lambda: self.call("POST", f"/session/{self.session}/element/{self.find(css)}/click")
        )

    def text(self, css: str) -> str:
        value: str = self.fresh(
            lambda: self.call("GET", f"/session/{self.session}/element/{self.find(css)}/text")
        )
        return value

    def texts(self, css: str) -> list[str]:
        """The text of every element matching ``css``, as shown (none: an empty list)."""

        def act() -> list[str]:
            found = self.call(
                "POST",
                f"/session/{self.session}/elements",
                {"using": "css selector", "value": css},
            )
            return [
                self.call("GET", f"/session/{self.session}/element/{item[self.ELEMENT]}/text")
                for item in found
            ]

        texts: list[str] = self.fresh(act)
        return texts

    def script(self, source: str) -> Any:
        """Run ``source`` (a function body) in the page; what it returns."""
        return self.call(
            "POST", f"/session/{self.session}/execute/sync", {"script": source, "args": []}
        )

    def selected(self, css: str) -> bool:
        """Whether the checkbox, radio button or option matching ``css`` is ticked."""
        value: bool = self.fresh(
            lambda: self.call("GET", f"/session/{self.session}/element/{self.find(css)}/selected")
        )
        return value

    def css(self, css: str, prop: str) -> str:
        """The computed value of the CSS property ``prop`` of the element matching ``css``."""
        value: str = self.fresh(
            lambda: self.call("GET", f"/session/{self.session}/element/{self.find(css)}/css/{prop}")
        )
        return value

    def console(self) -> list[str]:
        """What the browser's console got since the last call: failed loads, script
        errors, and what the Content-Security-Policy refused ("Refused to ...")."""
        entries = self.call("POST", f"/session/{self.session}/se/log", {"type": "browser"})
        return [str(entry["message"]) for entry in entries]

    @property
    def url(self) -> str:
        value: str = self.call("GET", f"/session/{self.session}/url")
        return value

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 10) -> None:
        """Poll ``check`` until true: a click returns before the page it posts has loaded."""

        def holds() -> bool:
            try:
                return check()
            except AssertionError:  # no such element yet
                return False

        wait_until(holds, timeout, what, interval=0.05)


#: Where Swagger UI shows the status of the answer to the call it ran.
SWAGGER_ANSWER = ".live-responses-table .response .response-col_status"


def run_job_list_in_swagger(browser: WebDriver) -> None:
    """In Swagger UI (open in ``browser``), run GET /jobs as a user does: open the jobs
    operations, then that one, "Try it out", "Execute"; until its answer shows."""
    browser.wait_for("Swagger UI", lambda: browser.text(".info .title").startswith("prodinf"))
    browser.click("#operations-tag-jobs")
    browser.wait_for("the jobs operations", lambda: browser.shows("#operations-jobs-get_job_list"))
    browser.click("#operations-jobs-get_job_list .opblock-summary")
    browser.wait_for("Try it out", lambda: browser.shows(".try-out__btn"))
    browser.click(".try-out__btn")
    browser.click(".execute")
    browser.wait_for("the live answer", lambda: browser.shows(SWAGGER_ANSWER))


def driven_chromium(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium driven through a chromedriver process on a free port; both
    end when the generator is closed."""
    need(CHROMIUM, "chromium")
    need(CHROMEDRIVER, "chromium-driver")
    port = free_port()
    proc = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    driver = WebDriver(f"http://127.0.0.1:{port}")

    def ready() -> bool:
        try:
            return bool(driver.call("GET", "/status")["ready"])
        except (OSError, AssertionError):
            return False

    try:
        wait_until(ready, 20, "chromedriver to start")
        driver.start(tmp_path / "profile")
        yield driver
        driver.quit()
    finally:
        proc.terminate()
        proc.wait(10)
