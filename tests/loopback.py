"""A real HTTP server on loopback, in a thread of the test process: the one way tests serve
HTTP (status URLs, webhook receivers, files, scripted job services).

``Loopback(answer)`` listens on 127.0.0.1 (or another loopback address, ``host=``) on a
port the kernel picks; each request becomes
a ``Request`` handed to ``answer``, whose ``Reply`` is sent back. Every request is kept in
``requests``. ``close()`` (or leaving the ``with`` block) ends a pending ``pause``, stops
the server and joins every thread it started, so nothing outlives the test.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Answer", "Loopback", "Reply", "Request", "Site", "free_port"]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (for a server the test starts later, or
    for a connection that must be refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Request:
    """One request as the server got it: ``path`` without the query, the query as a dict,
    the headers as the client spelled them, and the exact body bytes."""

    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What to answer: a dict or list is sent as JSON, a str as text, bytes as they are.
    ``content_type`` overrides the type those imply."""

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] | None = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, dict | list):
            payload, kind = json.dumps(self.body).encode(), "application/json"
        elif isinstance(self.body, str):
            payload, kind = self.body.encode(), "text/plain; charset=utf-8"
        else:
            payload, kind = self.body or b"", "application/octet-stream"
        return payload, self.content_type or kind


Answer = Callable[[Request], Reply]


class _Handler(BaseHTTPRequestHandler):
    loopback: Loopback
    timeout = 60  # a client that connects and never sends cannot hold close() forever

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.loopback.opened(self.request)

    def finish(self) -> None:
        self.loopback.closed(self.request)
        super().finish()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            target=self.path,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=dict(self.headers.items()),
            body=self.rfile.read(length) if length else b"",
        )
        reply = self.loopback.handle(request)
        payload, kind = reply.encoded()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except OSError:  # the client gave up (its timeout): nobody to answer
            pass

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve


class Loopback:
    """A real HTTP server on 127.0.0.1 answering every request with ``answer(request)``.

    ``host`` another loopback address (``127.0.0.2``): a second server that a test tells
    apart from the first by its address (one allowed, one denied). With ``keepalive``,
    it speaks HTTP/1.1 and keeps each connection open for the next request, as web
    servers do; ``connections`` counts the connections it accepted."""

    def __init__(
        self,
        answer: Answer,
        *,
        keep: bool = True,
        host: str = "127.0.0.1",
        keepalive: bool = False,
    ) -> None:
        self.answer = answer
        self.keep = keep  # False: a server looked at thousands of times keeps no history
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.connections = 0
        self._open: set[socket.socket] = set()
        handler = type(
            "Handler",
            (_Handler,),
            {
                "loopback": self,
                "protocol_version": "HTTP/1.1" if keepalive else "HTTP/1.0",
                # The headers and the body are two writes: without this, the body of
                # each answer on a kept connection waits for the client's delayed ACK.
                "disable_nagle_algorithm": keepalive,
            },
        )
        self.server = ThreadingHTTPServer((host, 0), handler)
        self.server.daemon_threads = False
        self.server.block_on_close = True  # server_close() joins the request threads
        self.port: int = self.server.server_address[1]
        self.base = f"http://{host}:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.started = False

    def url(self, path: str = "") -> str:
        return self.base + path

    def handle(self, request: Request) -> Reply:
        if self.keep:
            with self.lock:
                self.requests.append(request)
        return self.answer(request)

    def seen(self, path: str | None = None) -> list[Request]:
        """The requests so far, oldest first (those for ``path`` only, when given)."""
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]

    def opened(self, sock: socket.socket) -> None:
        with self.lock:
            self.connections += 1
            self._open.add(sock)

    def closed(self, sock: socket.socket) -> None:
        with self.lock:
            self._open.discard(sock)

    def pause(self, seconds: float) -> None:
        """Hold the current answer for ``seconds``, or until the server closes."""
        self.released.wait(seconds)

    def start(self) -> Loopback:
        if not self.started:
            self.thread.start()
            self.started = True
        return self

    def close(self) -> None:
        self.released.set()
        if self.started:
            self.server.shutdown()
            self.thread.join()
        with self.lock:  # a kept-alive connection waiting for its next request: end it
            for sock in self._open:
                with contextlib.suppress(OSError):  # closed already
                    sock.shutdown(socket.SHUT_RDWR)
        self.server.server_close()

    def __enter__(self) -> Loopback:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Site(Loopback):
    """A loopback server answering from ``routes``: a request target (path and query)
    or a path, to its ``Reply``; anything else is a 404. A test changes ``routes`` as it
    goes (a URL that starts working, a job that finishes)."""

    def __init__(self, routes: dict[str, Reply] | None = None, *, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Reply] = dict(routes or {})
        super().__init__(self.route, host=host)

    def route(self, request: Request) -> Reply:
        found = self.routes.get(request.target) or self.routes.get(request.path)
        return found or Reply(404, "no route")
