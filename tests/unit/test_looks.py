"""Looks at status URLs that cost little: kept connections, conditional GETs, no HTTP at all
for a job of this prodinf.

The engine runs for real on a SQLite store (the ``world``) against real HTTP servers on
loopback that keep connections alive (HTTP/1.1) and count them; time passes by moving
``next_look_at`` into the past, as the clock would.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select, update

import prodinf.kinds  # noqa: F401  (registers email_when_complete)
from prodinf.config import parse_networks
from prodinf.engine.registry import registry
from prodinf.engine.steps import Step
from prodinf.engine.watches import YIELD_SECONDS, look_due
from prodinf.exceptions import AddressDenied
from prodinf.outbound import Guard
from prodinf.remote import fetch_status
from prodinf.remote.sessions import CONNECTIONS, close_all
from prodinf.store import StepRow, WatchRow
from prodinf.store.types import utcnow
from tests.loopback import Loopback, Reply, Request
from tests.world import World


@pytest.fixture
def notify(world: World) -> World:
    world.registry.register(registry.get("email_when_complete"))
    return world


@pytest.fixture(autouse=True)
def _fresh_connections() -> Iterator[None]:
    """Each test starts with no kept connection and leaves none behind."""
    close_all()
    yield
    close_all()


def keepalive(answer: Any, host: str = "127.0.0.1") -> Loopback:
    return Loopback(answer, host=host, keepalive=True).start()


def submit(world: World, url: str, **params: object) -> str:
    job_id = world.submit("email_when_complete", {"url": url, "address": "u@example.org", **params})
    assert world.drive(job_id)["status"] == "waiting"
    return job_id


def time_passes(world: World) -> None:
    """Every watch's next look comes due."""
    with world.store.session() as session:
        session.execute(update(WatchRow).values(next_look_at=utcnow() - timedelta(seconds=1)))


def watched(world: World, job_id: str) -> dict[str, Any] | None:
    """What the watch woke the step with, if it did."""
    with world.store.session() as session:
        step = session.scalars(
            select(StepRow).where(StepRow.job_id == job_id, StepRow.name == "watch")
        ).one()
        return (step.state or {}).get("watched")


def test_looks_at_many_urls_of_one_host_keep_its_connections(notify: World) -> None:
    # Given twelve notifications on twelve URLs of one server, each having made its
    # first look
    with keepalive(lambda request: Reply(200, {"status": "running"})) as server:
        for i in range(12):
            submit(notify, f"{server.base}/job/{i}")

        # When three intervals pass, each with a look at every URL
        for _ in range(3):
            time_passes(notify)
            assert look_due(notify.store) == 12

        # Then the 48 looks went over a few kept connections, not one each
        assert len(server.seen()) == 48
        assert 1 <= server.connections <= CONNECTIONS


@pytest.mark.parametrize(
    ("validator", "condition", "first", "second"),
    [
        ("ETag", "If-None-Match", '"v1"', '"v2"'),
        (
            "Last-Modified",
            "If-Modified-Since",
            "Mon, 30 Nov 2026 10:00:00 GMT",
            "Mon, 30 Nov 2026 11:00:00 GMT",
        ),
    ],
)
def test_a_server_that_says_not_modified_is_asked_conditionally(
    notify: World, validator: str, condition: str, first: str, second: str
) -> None:
    # Given a status URL whose server sends a validator and answers 304 while it holds
    state = {"validator": first, "document": {"status": "running", "progress": 1}}
    full: list[Request] = []

    def answer(request: Request) -> Reply:
        if request.headers.get(condition) == state["validator"]:
            return Reply(304, b"", {validator: str(state["validator"])})
        full.append(request)
        return Reply(200, state["document"], {validator: str(state["validator"])})

    with keepalive(answer) as server:
        job_id = submit(notify, f"{server.base}/status")
        assert len(full) == 1  # the first look: a full answer

        # When three intervals pass with nothing changed
        for _ in range(3):
            time_passes(notify)
            assert look_due(notify.store) == 1

        # Then each look asked whether it changed, was told no, and the notification
        # still waits with the status it last read
        assert len(server.seen()) == 4 and len(full) == 1
        assert all(r.headers.get(condition) == first for r in server.seen()[1:])
        (watch,) = _watches(notify)
        assert watch.status == "running" and watch.errors == 0
        assert watched(notify, job_id) is None

        # When the URL finishes (a new validator)
        state.update(validator=second, document={"status": "complete", "rows": 7})
        time_passes(notify)
        assert look_due(notify.store) == 1

    # Then the next look read it in full and woke the notification with the document
    assert len(full) == 2
    outcome = watched(notify, job_id)
    assert outcome is not None and outcome["document"] == {"status": "complete", "rows": 7}
    assert _watches(notify) == []


def test_a_server_without_validators_is_asked_in_full_each_time(notify: World) -> None:
    # Given a status URL whose server sends neither ETag nor Last-Modified
    with keepalive(lambda request: Reply(200, {"status": "running"})) as server:
        submit(notify, f"{server.base}/status")

        # When two intervals pass
        for _ in range(2):
            time_passes(notify)
            look_due(notify.store)

    # Then no look was conditional
    assert len(server.seen()) == 3
    assert not [r for r in server.seen() if {"If-None-Match", "If-Modified-Since"} & set(r.headers)]


def test_a_kept_connection_does_not_skip_the_guard_when_a_name_moves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a name that resolves to an allowed address (127.0.0.2) of a kept-alive server,
    # with loopback otherwise denied
    guard = Guard(parse_networks("127.0.0.0/8"), parse_networks("127.0.0.2"))
    where = {"moving.test": "127.0.0.2"}
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        flags = kwargs.get("flags", args[3] if len(args) > 3 else 0)
        if not flags & socket.AI_NUMERICHOST:  # a name, looked up: where it is now
            host = where.get(host, host)
        return resolve(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with keepalive(lambda request: Reply(200, {"status": "running"}), host="127.0.0.2") as server:
        url = f"http://moving.test:{server.port}/status"
        for _ in range(2):
            assert fetch_status(url, timeout=5, guard=guard) == (200, {"status": "running"})
        assert server.connections == 1  # the second look kept the connection

        # When the name moves to a denied address
        where["moving.test"] = "127.0.0.1"

        # Then the next look is refused, though a connection to the old address is open
        with pytest.raises(AddressDenied) as caught:
            fetch_status(url, timeout=5, guard=guard)
        assert "moving.test resolves to 127.0.0.1, in 127.0.0.0/8" in caught.value.message
        assert len(server.seen()) == 2


def test_a_cookie_one_url_sets_is_not_sent_with_another(notify: World) -> None:
    # Given a server whose /login answers with a cookie
    def answer(request: Request) -> Reply:
        headers = {"Set-Cookie": "sid=secret-of-a; Path=/"} if request.path == "/login" else {}
        return Reply(200, {"status": "running"}, headers)

    with keepalive(answer) as server:
        # When one URL of it is looked at, then another (on the same kept connection)
        fetch_status(f"{server.base}/login", timeout=5)
        fetch_status(f"{server.base}/other", timeout=5)

    # Then the second request carried no cookie
    assert "Cookie" not in server.seen("/other")[0].headers
    assert server.connections == 1


def test_watches_on_jobs_of_this_prodinf_are_looked_at_without_http(notify: World) -> None:
    # Given three notifications on jobs of this prodinf, by URLs of a portal that does
    # not answer (a look over HTTP would fail)
    notify.linear("slow", Step("run", lambda ctx: ctx.wait(3600, "later")))
    jobs = [notify.submit("slow") for _ in range(3)]
    for job_id in jobs:
        notify.drive(job_id)
    ids = [submit(notify, f"http://127.0.0.1:9/api/v1/jobs/{job}") for job in jobs]

    # When the reconciler's safety-net look comes due for all three
    time_passes(notify)
    assert look_due(notify.store) == 3

    # Then each read its job's status from the store: no error, nobody woken yet
    assert sorted((w.status, w.errors) for w in _watches(notify)) == [("waiting", 0)] * 3
    assert all(watched(notify, i) is None for i in ids)


def test_looks_give_way_to_tasks_and_are_made_late_not_dropped(notify: World) -> None:
    # Given two notifications on two URLs, one due a second ago, one due for longer than
    # a look may be put off
    with keepalive(lambda request: Reply(200, {"status": "running"})) as server:
        recent = submit(notify, f"{server.base}/job/recent")
        overdue = submit(notify, f"{server.base}/job/overdue")
        time_passes(notify)
        with notify.store.session() as session:
            session.execute(
                update(WatchRow)
                .where(WatchRow.url.endswith("/overdue"))
                .values(next_look_at=utcnow() - timedelta(seconds=YIELD_SECONDS + 1))
            )
        first = len(server.seen())

        # When the reconciler of a worker with tasks to run looks
        # Then it looks only at the overdue one
        assert look_due(notify.store, busy=lambda: True) == 1
        assert [r.path for r in server.seen()[first:]] == ["/job/overdue"]

        # When the worker has nothing to run
        # Then the one put off is looked at, and neither notification was woken or lost
        assert look_due(notify.store, busy=lambda: False) == 1
        assert [r.path for r in server.seen()[first:]] == ["/job/overdue", "/job/recent"]
    assert watched(notify, recent) is None and watched(notify, overdue) is None
    assert {w.status for w in _watches(notify)} == {"running"}


def _watches(world: World) -> list[WatchRow]:
    with world.store.session() as session:
        rows = list(session.scalars(select(WatchRow)))
        session.expunge_all()
        return rows


def test_a_proxy_set_between_two_looks_is_used_by_the_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a status URL looked at directly, on a kept connection
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with (
        keepalive(lambda request: Reply(200, {"status": "running"})) as server,
        Loopback(lambda request: Reply(200, {"status": "running", "via": "proxy"})) as proxy,
    ):
        url = f"{server.base}/status"
        assert fetch_status(url, timeout=5) == (200, {"status": "running"})

        # When the environment names a proxy
        monkeypatch.setenv("HTTP_PROXY", proxy.base)

        # Then the next look goes through it, as a new session's would
        assert fetch_status(url, timeout=5) == (200, {"status": "running", "via": "proxy"})
        assert [r.target for r in proxy.seen()] == [url]
        assert len(server.seen()) == 1


@pytest.mark.parametrize(
    "path",
    ["/status?a=1&b=two", "/st%61tus", "/with space", "/caf\u00e9", "/redirect"],
)
@pytest.mark.parametrize("credentials", ["", "user:pa%20ss@"])
def test_a_look_sends_what_a_requests_session_sends(path: str, credentials: str) -> None:
    # Given a server that answers "running" (and redirects /redirect to /status)
    def answer(request: Request) -> Reply:
        if request.path == "/redirect":
            return Reply(302, b"", {"Location": "/status"})
        return Reply(200, {"status": "running"})

    with keepalive(answer) as server:
        url = f"{server.base}{path}".replace("://", f"://{credentials}", 1)

        # When a status URL is looked at, then fetched by a plain requests session
        assert fetch_status(url, timeout=5) == (200, {"status": "running"})
        with requests.Session() as plain:
            plain.get(url, headers={"Accept": "application/json"}, timeout=5).close()

    # Then the server got the very same requests from both (a redirect followed once)
    seen = [(r.method, r.target, sorted(r.headers.items())) for r in server.seen()]
    half = len(seen) // 2
    assert half == (2 if path == "/redirect" else 1)
    assert seen[:half] == seen[half:]
