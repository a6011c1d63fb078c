"""The portal's request log (``prodinf up``, ``prodinf portal``) never shows a password a
request line carries: a server URI to list (``?server_uri=``), a login's ``?next=``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests
from flask import Flask

from prodinf.portal.hardening import make_server

PASSWORD = "S3cret@Pass99"


@pytest.fixture
def served() -> Iterator[str]:
    app = Flask(__name__)
    app.add_url_rule("/list", "list", lambda: "listed")
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_password_in_a_request_line_is_logged_masked(
    served: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Given URLs with a password in their query, as typed, encoded (a form) and encoded
    twice (a ?next=), when they are requested, then each is logged with the host and
    without the password; a line with none is logged as it came, and an encoded newline
    in a masked one cannot start a line of its own."""
    caplog.set_level(logging.INFO, logger="werkzeug")
    uri = f"mysql://u:{PASSWORD.replace('@', '%40')}@db.example.org:3306"
    once = quote(uri, safe="")
    for target in (f"/list?server_uri={uri}", f"/list?server_uri={once}"):
        assert requests.get(served + target, timeout=10).text == "listed"
    requests.get(f"{served}/login?next={quote('/list?server_uri=' + once, safe='')}", timeout=10)
    requests.get(f"{served}/list?server_uri={once}%0aforged%20line", timeout=10)
    requests.get(f"{served}/list?q=a%20b", timeout=10)

    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert len(lines) == 5, lines
    for line in lines[:4]:
        assert "u:***@db.example.org:3306" in line
        assert "S3cret" not in line and "Pass99" not in line
    assert "\n" not in lines[3] and "\\x0aforged" in lines[3]
    assert "/list?q=a%20b" in lines[4]
