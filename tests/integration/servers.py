"""Real servers on loopback for the mail tests and benchmarks: an SMTP server (aiosmtpd)
that keeps what it accepts, an HTTP server that answers like a remote job service, and
a webhook receiver that keeps every call (both HTTP ones are ``tests.loopback`` servers)."""

from __future__ import annotations

import email
import threading
import time
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller

from tests.loopback import Loopback, Reply, Request, free_port

__all__ = ["Call", "Inbox", "Smtp", "StatusServer", "WebhookReceiver", "free_port"]


# -- a real SMTP server -------------------------------------------------------------------


class Inbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        #: When each message was accepted (``time.time()``), in order.
        self.arrived: list[float] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
            self.arrived.append(time.time())
        return "250 Message accepted for delivery"

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


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

    ``/never``: always ``running``. ``/missing``: always 404. Counts every look. It keeps
    connections alive (HTTP/1.1), as web servers do, unless ``keepalive`` is False.
    """

    def __init__(self, *, keepalive: bool = True) -> None:
        self.looks: dict[str, int] = {}
        self.lock = threading.Lock()
        self.loopback = Loopback(self.answer, keep=False, keepalive=keepalive)
        self.base = self.loopback.base

    def answer(self, request: Request) -> Reply:
        with self.lock:
            self.looks[request.path] = seen = self.looks.get(request.path, 0) + 1
        if request.path == "/missing":
            return Reply(404, "not found")
        running = int(request.query.get("running", 3))
        if request.path == "/never" or seen <= running:
            return Reply(200, {"status": "running", "progress": seen})
        return Reply(
            200,
            {
                "status": "complete",
                "dataset": "homo_sapiens_core_115_38",
                "rows": 123456,
                "checks": {"passed": 12, "failed": 0},
            },
        )

    def looked(self, path: str) -> int:
        with self.lock:
            return self.looks.get(path, 0)

    def start(self) -> StatusServer:
        self.loopback.start()
        return self

    def stop(self) -> None:
        self.loopback.close()


# -- a real webhook receiver ------------------------------------------------------------------

#: One POST a webhook receiver got: ``.headers``, the exact ``.body`` bytes, ``.json()``.
Call = Request


class WebhookReceiver:
    """Takes POSTs on ``/hook``. ``answers`` are the status codes of the first calls
    (then 200); ``delay`` seconds of silence before answering; every call is kept."""

    def __init__(self, answers: list[int] | None = None, delay: float = 0.0) -> None:
        self.answers = list(answers or [])
        self.delay = delay
        self.lock = threading.Lock()
        self.loopback = Loopback(self.answer)
        self.base = self.loopback.base
        self.url = f"{self.base}/hook"

    def answer(self, request: Request) -> Reply:
        with self.lock:
            code = self.answers.pop(0) if self.answers else 200
        if self.delay:
            self.loopback.pause(self.delay)
        headers = {"Location": f"{self.base}/elsewhere"} if 300 <= code < 400 else {}
        return Reply(code, b"", headers)

    @property
    def calls(self) -> list[Call]:
        return self.loopback.seen()

    def count(self) -> int:
        return len(self.loopback.seen())

    def start(self) -> WebhookReceiver:
        self.loopback.start()
        return self

    def stop(self) -> None:
        self.loopback.close()
