"""Real servers on loopback for the mail tests and benchmarks: an SMTP server (aiosmtpd)
that keeps what it accepts, an HTTP server that answers like a remote job service, and
a webhook receiver that keeps every call."""

from __future__ import annotations

import email
import json
import socket
import threading
import time
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

__all__ = ["Call", "Inbox", "Smtp", "StatusServer", "WebhookReceiver", "free_port"]


# -- a real SMTP server -------------------------------------------------------------------


class Inbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Smtp:
    def __init__(self, port: int) -> None:
        self.port = port
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


# -- a real HTTP status server ----------------------------------------------------------------


class StatusServer:
    """``/job/<name>?running=N``: answers ``running`` N times, then ``complete``.

    ``/never``: always ``running``. ``/missing``: always 404. Counts every look.
    """

    def __init__(self) -> None:
        self.looks: dict[str, int] = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                with outer.lock:
                    outer.looks[path] = seen = outer.looks.get(path, 0) + 1
                if path == "/missing":
                    self.reply(404, b"not found", "text/plain")
                    return
                running = int(dict(p.split("=") for p in query.split("&") if p).get("running", 3))
                if path == "/never" or seen <= running:
                    doc: dict[str, Any] = {"status": "running", "progress": seen}
                else:
                    doc = {
                        "status": "complete",
                        "dataset": "homo_sapiens_core_115_38",
                        "rows": 123456,
                        "checks": {"passed": 12, "failed": 0},
                    }
                self.reply(200, json.dumps(doc).encode(), "application/json")

            def reply(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def looked(self, path: str) -> int:
        with self.lock:
            return self.looks.get(path, 0)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- a real webhook receiver ------------------------------------------------------------------


class Call:
    """One POST a webhook receiver got: its headers and exact body bytes."""

    def __init__(self, headers: dict[str, str], body: bytes) -> None:
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """Takes POSTs on ``/hook``. ``answers`` are the status codes of the first calls
    (then 200); ``delay`` seconds of silence before answering; every call is kept."""

    def __init__(self, answers: list[int] | None = None, delay: float = 0.0) -> None:
        self.answers = list(answers or [])
        self.delay = delay
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.calls.append(Call(dict(self.headers.items()), body))
                    code = outer.answers.pop(0) if outer.answers else 200
                if outer.delay:
                    time.sleep(outer.delay)
                self.send_response(code)
                if 300 <= code < 400:
                    self.send_header("Location", f"{outer.base}/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def count(self) -> int:
        with self.lock:
            return len(self.calls)

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
