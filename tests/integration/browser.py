"""A real headless browser for the page tests: Chromium from Debian, and the app served
over real HTTP on loopback. Tests that need it skip on a laptop without it and fail in CI."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

__all__ = ["CHROMEDRIVER", "CHROMIUM", "CHROMIUM_FLAGS", "chromium", "need", "serve"]

CI = bool(os.environ.get("CI"))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def need(binary: str, package: str) -> None:
    """Skip (laptop) or fail (CI) unless ``binary`` is installed."""
    if Path(binary).exists():
        return
    message = f"{binary} is not installed (apt-get install {package})"
    if CI:
        pytest.fail(f"{message}, and CI is set: the browser tests must run")
    pytest.skip(message)


def serve(app: Flask) -> Iterator[str]:
    """Serve ``app`` over real HTTP on 127.0.0.1, in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
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
