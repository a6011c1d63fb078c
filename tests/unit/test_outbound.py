"""Outbound requests for jobs and users never reach a denied address (``prodinf.outbound``).

Two real HTTP servers on loopback: ``inside`` on 127.0.0.1, which the tests' deny list
refuses (``127.0.0.0/8``), and ``outside`` on 127.0.0.2, which the allowed list exempts.
Every entry point (``http_get``, ``wait_for_url``, ``email_when_complete`` and its URL
watch, webhooks, the services) is sent at ``inside`` in each spelling of its address, by
a name, and by a redirect from ``outside``: the job fails at once naming the URL and
the network, and ``inside`` sees no request. The default deny list is checked against
the cloud metadata address without any server: the ``socket.connect`` audit event shows
no connection was even tried.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pydantic
import pytest
from flask.testing import FlaskClient
from sqlalchemy import update

import prodinf.kinds  # noqa: F401  (registers the built-in kinds)
from prodinf import Step, webhooks
from prodinf.config import DEFAULT_DENIED_NETWORKS, Settings, parse_networks
from prodinf.engine.notices import NOTIFICATION_KIND
from prodinf.engine.registry import registry
from prodinf.engine.watches import look_due
from prodinf.exceptions import AddressDenied, ValidationError
from prodinf.kinds.subscriptions import REMOTE_KIND
from prodinf.mail import outbox_dir
from prodinf.outbound import Guard
from prodinf.remote import RemoteJobClient, fetch_status
from prodinf.remote.http_service import HttpJobs
from prodinf.remote.services import HttpService
from prodinf.store import WatchRow
from prodinf.store.types import utcnow
from tests.loopback import Loopback, Reply, Request, Site
from tests.world import World

#: What the tests deny: the defaults and loopback, but 127.0.0.2 (``outside``).
DENIED = DEFAULT_DENIED_NETWORKS + ",127.0.0.0/8"
ALLOWED = "127.0.0.2"
SECRET = {"status": "succeeded", "aws_secret_access_key": "internal-only"}


def spellings(port: int) -> list[str]:
    """127.0.0.1:``port`` as a URL's host can write it."""
    hosts = ["127.0.0.1", "2130706433", "0x7f000001", "0x7f.1", "0177.0.0.1", "127.1"]
    return [f"http://{host}:{port}" for host in [*hosts, "[::ffff:127.0.0.1]"]]


#: 169.254.169.254, the cloud metadata address, as a URL's host can write it.
METADATA = [
    "169.254.169.254",
    "2852039166",
    "0xa9fea9fe",
    "0xa9.0xfe.0xa9.0xfe",
    "0251.0376.0251.0376",
    "169.254.43518",
    "[::ffff:169.254.169.254]",
    "[::ffff:a9fe:a9fe]",
    "[64:ff9b::a9fe:a9fe]",
]


# -- the world: two servers, a deny list with loopback in it --------------------------------


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,127.0.0.2,localhost")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "denied_networks": DENIED,
            "allowed_networks": ALLOWED,
            "webhook_timeout": 2.0,
        }
    )


@pytest.fixture
def inside() -> Iterator[Site]:
    """A server on 127.0.0.1, a denied address, holding what must not leak."""
    with Site({"/secret": Reply(200, SECRET), "/api/v1/jobs": Reply(201, {"id": "j1"})}) as s:
        yield s


@pytest.fixture
def outside() -> Iterator[Site]:
    """A server on 127.0.0.2, which PRODINF_ALLOWED_NETWORKS exempts."""
    with Site(host="127.0.0.2") as s:
        yield s


@pytest.fixture
def kinds(world: World) -> World:
    for name in ("http_get", "wait_for_url", "email_when_complete", NOTIFICATION_KIND):
        world.registry.register(registry.get(name))
    return world


def slipped_in(world: World, kind: str, params: dict[str, Any]) -> str:
    """A job submitted while its address was still allowed (the list changed since, or
    a name resolved elsewhere): submission refuses a denied address written as one."""
    before = world.settings.model_copy(update={"denied_networks": "", "allowed_networks": None})
    summary, _ = world.new_jobs(before).submit(kind, params)
    return str(summary["id"])


def redirect(site: Site, path: str, to: str) -> str:
    """``site`` answers ``path`` with a redirect to ``to``; returns the URL of ``path``."""
    site.routes[path] = Reply(302, b"", {"Location": to})
    return site.url(path)


def refused(job: dict[str, Any], url: str, network: str = "127.0.0.0/8") -> None:
    """The job failed at once, not retried, naming ``url`` and the network that refused it."""
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "AddressDenied"
    message = job["error"]["message"]
    assert f"{url} refused: " in message, message
    assert f"in {network}, which PRODINF_DENIED_NETWORKS refuses" in message
    assert not [h for h in job["history"] if h["event"] == "step.retrying"]


# -- no connection is even tried: the socket.connect audit event ----------------------------

_connects: list[Any] | None = None
_hooked = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _connects is not None:
        _connects.append(args[1])


@pytest.fixture
def connects() -> Iterator[list[Any]]:
    """Where the test process connected while the test ran."""
    global _connects, _hooked
    if not _hooked:  # an audit hook cannot be removed: one for the session, idle after
        sys.addaudithook(_audit)
        _hooked = True
    _connects = []
    try:
        yield _connects
    finally:
        _connects = None


# -- the default deny list -------------------------------------------------------------------


@pytest.mark.parametrize("host", METADATA)
def test_the_default_settings_refuse_cloud_metadata_in_every_spelling_without_connecting(
    home: Path, host: str, connects: list[Any]
) -> None:
    # Given the default settings
    guard = Guard.of(Settings(home=home))

    # When the metadata address is fetched, however it is spelled
    url = f"http://user:hunter2@{host}/latest/meta-data/iam/"
    with pytest.raises(AddressDenied) as caught:
        fetch_status(url, timeout=5, guard=guard)

    # Then it is refused, naming the URL (password masked) and the rule, and no
    # connection was tried
    said = caught.value.message
    assert said.startswith(f"GET http://user:***@{host}/latest/meta-data/iam/ refused: ")
    assert "169.254.169.254" in said
    assert "in 169.254.0.0/16, which PRODINF_DENIED_NETWORKS refuses" in said
    assert "hunter2" not in str(caught.value.details)
    assert connects == []


@pytest.mark.parametrize(("host", "network"), [("0.0.0.0", "0.0.0.0/8"), ("[::]", "::/128")])
def test_the_default_settings_refuse_this_host_as_the_unspecified_address(
    home: Path, inside: Site, host: str, network: str
) -> None:
    # Given the default settings and a server on 127.0.0.1, which 0.0.0.0 reaches on Linux
    world = World(Settings(home=home))
    world.registry.register(registry.get("http_get"))

    # When http_get fetches it through the unspecified address
    url = f"http://{host}:{inside.port}/secret"
    job = world.drive(slipped_in(world, "http_get", {"url": url}))
    world.close()

    # Then the job fails at once, and the server saw nothing
    refused(job, url, network)
    assert inside.seen() == []


def test_http_get_of_cloud_metadata_fails_the_job_at_once(home: Path, connects: list[Any]) -> None:
    # Given the default settings
    world = World(Settings(home=home))
    world.registry.register(registry.get("http_get"))

    # When a job asks for the metadata address in decimal
    job = world.drive(slipped_in(world, "http_get", {"url": "http://2852039166/latest/"}))
    world.close()

    # Then it failed at its first attempt, with no connection tried
    refused(job, "http://169.254.169.254/latest/", "169.254.0.0/16")
    assert job["steps"][0]["attempts"] == 1
    assert connects == []


# -- submission: a URL written as a denied address is bad input ----------------------------

FETCHING = ["http_get", "wait_for_url", "email_when_complete"]


@pytest.mark.parametrize("kind", FETCHING)
@pytest.mark.parametrize("spelled", range(7))
def test_a_url_written_as_a_denied_address_is_refused_at_submission(
    kinds: World, inside: Site, kind: str, spelled: int
) -> None:
    url = spellings(inside.port)[spelled] + "/secret"

    with pytest.raises(ValidationError) as caught:
        kinds.submit(kind, {"url": url, "address": "someone@example.org"})

    assert caught.value.field == "params.url"
    assert caught.value.message.startswith("params.url: ")
    assert "127.0.0.1" in caught.value.message
    assert "in 127.0.0.0/8, which PRODINF_DENIED_NETWORKS refuses" in caught.value.message
    assert inside.seen() == []


def test_the_api_answers_400_naming_the_url(client: FlaskClient, settings: Settings) -> None:
    # Given the default deny list (and the portal's own settings)
    answer = client.post(
        "/api/v1/jobs",
        json={"kind": "http_get", "params": {"url": "http://0xa9fea9fe/latest/meta-data/"}},
    )

    assert answer.status_code == 400
    assert answer.json is not None
    assert answer.json["field"] == "params.url"
    assert "169.254.169.254, in 169.254.0.0/16" in answer.json["message"]


def test_a_name_is_not_looked_up_at_submission(kinds: World, inside: Site) -> None:
    """Names are checked when the request is made (they may change in between)."""
    assert kinds.submit("http_get", {"url": f"http://localhost:{inside.port}/secret"})


# -- http_get -------------------------------------------------------------------------------


@pytest.mark.parametrize("spelled", range(7))
def test_http_get_refuses_each_spelling_of_a_denied_address(
    kinds: World, inside: Site, spelled: int
) -> None:
    # Given a denied server, and a job for its address spelled one of the ways a URL can
    url = spellings(inside.port)[spelled] + "/secret"

    # When http_get fetches it
    job = kinds.drive(slipped_in(kinds, "http_get", {"url": url}))

    # Then the job fails at once naming the rule, and the server saw no request
    assert job["status"] == "failed"
    assert job["error"]["type"] == "AddressDenied"
    assert "in 127.0.0.0/8, which PRODINF_DENIED_NETWORKS refuses" in job["error"]["message"]
    assert job["result"] is None
    assert inside.seen() == []


def test_http_get_refuses_a_name_that_resolves_to_a_denied_address(
    kinds: World, inside: Site
) -> None:
    url = f"http://localhost:{inside.port}/secret"

    job = kinds.drive(kinds.submit("http_get", {"url": url}))

    refused(job, url)
    assert "localhost resolves to 127.0.0.1, in 127.0.0.0/8" in job["error"]["message"]
    assert inside.seen() == []


def test_http_get_refuses_a_redirect_into_a_denied_address(
    kinds: World, inside: Site, outside: Site
) -> None:
    # Given an allowed server that redirects to a denied one
    url = redirect(outside, "/go", inside.url("/secret"))

    # When http_get fetches the allowed URL
    job = kinds.drive(kinds.submit("http_get", {"url": url}))

    # Then it is refused at the redirect: the first server was asked, the second not
    refused(job, inside.url("/secret"))
    assert [r.path for r in outside.seen()] == ["/go"]
    assert inside.seen() == []


def test_http_get_fetches_an_allowed_url_and_follows_its_redirects(
    kinds: World, outside: Site
) -> None:
    outside.routes["/data"] = Reply(200, b"hello")
    url = redirect(outside, "/go", outside.url("/data"))

    job = kinds.drive(kinds.submit("http_get", {"url": url}))

    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["bytes"] == 5
    assert [r.path for r in outside.seen()] == ["/go", "/data"]


# -- wait_for_url ---------------------------------------------------------------------------


@pytest.mark.parametrize("spelled", [0, 1, 6])
def test_wait_for_url_refuses_a_denied_address_and_returns_nothing(
    kinds: World, inside: Site, spelled: int
) -> None:
    url = spellings(inside.port)[spelled] + "/secret"

    job = kinds.drive(slipped_in(kinds, "wait_for_url", {"url": url}))

    assert job["status"] == "failed"
    assert job["error"]["type"] == "AddressDenied"
    assert "in 127.0.0.0/8" in job["error"]["message"]
    assert job["result"] is None
    assert "internal-only" not in str(job)
    assert inside.seen() == []


def test_wait_for_url_refuses_a_redirect_and_never_returns_the_internal_document(
    kinds: World, inside: Site, outside: Site
) -> None:
    url = redirect(outside, "/status", inside.url("/secret"))

    job = kinds.drive(kinds.submit("wait_for_url", {"url": url}))

    refused(job, inside.url("/secret"))
    assert job["result"] is None
    assert "internal-only" not in str(job)
    assert [r.path for r in outside.seen()] == ["/status"]
    assert inside.seen() == []


def test_wait_for_url_reads_an_allowed_url(kinds: World, outside: Site) -> None:
    outside.routes["/status"] = Reply(200, {"status": "complete", "rows": 3})

    job = kinds.drive(kinds.submit("wait_for_url", {"url": outside.url("/status")}))

    assert job["status"] == "succeeded", job["error"]
    assert job["result"] == {"status": "complete", "rows": 3}


# -- email_when_complete and its URL watch ---------------------------------------------------


def mails(settings: Settings) -> list[Path]:
    return sorted(outbox_dir(settings).glob("*.eml"))


@pytest.mark.parametrize("how", ["address", "name", "redirect"])
def test_email_when_complete_refuses_a_denied_url_and_mails_nobody(
    kinds: World, settings: Settings, inside: Site, outside: Site, how: str
) -> None:
    # Given a URL that reaches the denied server by its address, a name or a redirect
    target = inside.url("/secret")
    url = {
        "address": target,
        "name": f"http://localhost:{inside.port}/secret",
        "redirect": redirect(outside, "/status", target),
    }[how]

    # When a notification on it runs
    params = {"url": url, "address": "someone@example.org"}
    job = kinds.drive(slipped_in(kinds, "email_when_complete", params))

    # Then it fails at its first look, mailing nobody, and the server saw nothing
    refused(job, url if how == "name" else target)
    assert mails(settings) == []
    assert inside.seen() == []


def test_a_watched_url_that_becomes_denied_fails_its_notifications(
    kinds: World, settings: Settings, outside: Site
) -> None:
    # Given a notification waiting on an allowed URL that is still running
    outside.routes["/status"] = Reply(200, {"status": "running"})
    url = outside.url("/status")
    params = {"url": url, "address": "someone@example.org", "interval": 1}
    job_id = kinds.submit("email_when_complete", params)
    assert kinds.drive(job_id)["status"] == "waiting"

    # When the reconciler's next look finds its address denied (its name now resolves
    # there, or the operator denied it)
    with kinds.store.session() as session:
        session.execute(update(WatchRow).values(next_look_at=utcnow() - timedelta(seconds=1)))
    assert look_due(kinds.store, guard=Guard(parse_networks("127.0.0.0/8"))) == 1
    job = kinds.drive(job_id)

    # Then the notification fails, naming the URL, and nobody is mailed
    refused(job, url)
    assert mails(settings) == []
    assert len(outside.seen()) == 1  # the first look only


# -- webhooks -------------------------------------------------------------------------------


@pytest.mark.parametrize("spelled", range(7))
def test_a_webhook_to_a_denied_address_is_never_called(
    settings: Settings, inside: Site, spelled: int
) -> None:
    url = spellings(inside.port)[spelled] + "/hook"

    with pytest.raises(AddressDenied) as caught:
        webhooks.post(url, {"a": 1}, event="job.succeeded", delivery="d1", settings=settings)

    assert caught.value.message.startswith(f"POST {url} refused: ")
    assert inside.seen() == []


def test_a_notification_whose_webhook_is_denied_fails_at_once(
    kinds: World, settings: Settings, inside: Site, outside: Site
) -> None:
    # Given a job notifying a denied webhook, and another notifying an allowed one
    kinds.linear("ok", Step("build", lambda ctx: {"rows": 1}))
    denied = kinds.submit("ok", notify={"webhook": inside.url("/hook")})
    allowed = kinds.submit("ok", notify={"webhook": outside.url("/hook")})
    outside.routes["/hook"] = Reply(200, b"")

    # When both end and their notifications are delivered
    notes = []
    for job_id in (denied, allowed):
        kinds.drive(job_id)
        (message,) = kinds.messages(job_id, "notification.queued")
        notes.append(kinds.drive(message.split()[-1]))

    # Then the denied one failed at once, never called; the allowed one was delivered
    refused(notes[0], inside.url("/hook"))
    assert inside.seen() == []
    assert notes[1]["status"] == "succeeded", notes[1]["error"]
    assert [r.path for r in outside.seen()] == ["/hook"]


# -- services: another prodinf, an HTTP job service ----------------------------------------


def test_a_remote_prodinf_at_a_denied_address_is_never_called(
    settings: Settings, inside: Site
) -> None:
    with (
        RemoteJobClient(inside.base, retries=0, guard=Guard.of(settings)) as client,
        pytest.raises(AddressDenied) as caught,
    ):
        client.submit("k", {})

    assert caught.value.message.startswith(f"POST {inside.base}/api/v1/jobs refused: ")
    assert inside.seen() == []


def test_a_remote_job_url_that_points_at_a_denied_address_is_refused(
    settings: Settings, inside: Site, outside: Site
) -> None:
    # Given an allowed prodinf whose job URL points at a denied address
    job_url = inside.url("/api/v1/jobs/j1")
    outside.routes["/api/v1/jobs"] = Reply(201, {"id": "j1", "url": job_url, "status": "queued"})

    with RemoteJobClient(outside.base, retries=0, guard=Guard.of(settings)) as client:
        job = client.submit("k", {})
        # When the client polls it, then the poll is refused
        with pytest.raises(AddressDenied) as caught:
            client.get(job.url)

    assert caught.value.message.startswith(f"GET {job_url} refused: ")
    assert inside.seen() == []


def http_service(base: str) -> HttpService:
    return HttpService.model_validate(
        {
            "name": "dc",
            "type": "http",
            "url": base,
            "submit": {"path": "/runs"},
            "job_id": "/id",
            "status_url": "/runs/{{ job_id }}",
            "status": "/state",
            "pending": ["running"],
            "succeeded": ["done"],
            "failed": ["failed"],
        }
    )


@pytest.mark.parametrize("spelled", [0, 2, 6])
def test_an_http_job_service_at_a_denied_address_is_never_called(
    settings: Settings, inside: Site, spelled: int
) -> None:
    base = spellings(inside.port)[spelled]

    with (
        HttpJobs(http_service(base), guard=Guard.of(settings)) as jobs,
        pytest.raises(AddressDenied) as caught,
    ):
        jobs.submit({}, key="k1")

    assert caught.value.message.startswith(f"service 'dc': POST {base}/runs refused: ")
    assert caught.value.details["service"] == "dc"
    assert inside.seen() == []


@pytest.mark.parametrize("kind", ["prodinf", "http"])
def test_a_remote_job_on_a_service_at_a_denied_address_fails_at_once(
    settings: Settings, tmp_path: Path, inside: Site, kind: str
) -> None:
    # Given a service of PRODINF_SERVICES on a denied address
    extra = (
        ""
        if kind == "prodinf"
        else "submit: {path: /runs}, job_id: /id, status_url: '/runs/{{ job_id }}', "
        "status: /state, pending: [running], succeeded: [done], failed: [failed]"
    )
    entry = f"{{name: peer, type: {kind}, url: '{inside.base}'{', ' + extra if extra else ''}}}"
    (tmp_path / "services.yaml").write_text(f"services:\n  - {entry}\n")
    world = World(settings.model_copy(update={"services": tmp_path / "services.yaml"}))
    world.registry.register(registry.get(REMOTE_KIND))

    # When a remote job runs on it (a service down is tried again for hours: not this)
    params = {"service": "peer", "kind": "k"} if kind == "prodinf" else {"service": "peer"}
    job = world.drive(world.submit(REMOTE_KIND, params))
    world.close()

    # Then it fails at once, and the service saw nothing
    assert job["status"] == "failed"
    assert job["error"]["type"] == "AddressDenied"
    assert "in 127.0.0.0/8, which PRODINF_DENIED_NETWORKS refuses" in job["error"]["message"]
    assert inside.seen() == []


# -- behind a proxy ---------------------------------------------------------------------------


def test_behind_a_proxy_the_name_is_checked_before_the_proxy_is_asked(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an HTTP proxy (on 127.0.0.1: the operator's, not checked) that answers itself
    def proxied(request: Request) -> Reply:
        return Reply(200, {"status": "done", "via": "proxy"})

    with Loopback(proxied) as proxy:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.base)
        guard = Guard.of(settings)

        # When a denied URL and an allowed one are fetched through it
        with pytest.raises(AddressDenied) as caught:
            fetch_status("http://127.0.0.3:9/secret", timeout=5, guard=guard)
        allowed = fetch_status("http://127.0.0.2:9/status", timeout=5, guard=guard)

    # Then the proxy was asked only for the allowed one
    assert "127.0.0.3, in 127.0.0.0/8" in caught.value.message
    assert allowed == (200, {"status": "done", "via": "proxy"})
    assert [r.target for r in proxy.seen()] == ["http://127.0.0.2:9/status"]


# -- the settings -----------------------------------------------------------------------------


def test_a_deny_list_entry_that_is_not_a_network_stops_prodinf_naming_it(home: Path) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings(home=home, denied_networks="10.0.0.0/8, 169.254.0.0/33")

    assert "denied_networks" in str(caught.value)
    assert "'169.254.0.0/33' does not appear to be an IPv4 or IPv6 network" in str(caught.value)


def test_the_lists_are_read_from_the_environment(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRODINF_DENIED_NETWORKS", " 10.0.0.0/8 , fc00::/7,10.1.2.3/8")
    monkeypatch.setenv("PRODINF_ALLOWED_NETWORKS", "10.1.2.3")
    settings = Settings(home=home)

    assert settings.denied_networks == "10.0.0.0/8,fc00::/7,10.0.0.0/8"
    guard = Guard.of(settings)
    assert str(guard.refusing(ip_address("10.9.9.9"))) == "10.0.0.0/8"
    assert guard.refusing(ip_address("10.1.2.3")) is None  # allowed
    assert str(guard.refusing(ip_address("fd12::1"))) == "fc00::/7"
    assert str(guard.refusing(ip_address("::ffff:10.9.9.9"))) == "10.0.0.0/8"
    assert guard.refusing(ip_address("::ffff:10.1.2.3")) is None  # allowed, as IPv6 too
    assert guard.refusing(ip_address("127.0.0.1")) is None  # not in this list
