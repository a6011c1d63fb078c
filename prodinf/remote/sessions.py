"""Kept-alive sessions for looks at status URLs: one pooled, guarded session per host.

A look at a status URL (a URL watch, ``wait_for_url``, a notification's first look) is
one small GET, made again every interval, thousands of times a minute when thousands
of URLs are watched. A new connection for each costs more than the request (and a TLS
handshake far more). :func:`session_for` hands out one ``requests.Session`` per guard,
scheme, host and port, kept in this process, whose connections stay open between
looks (up to :data:`CONNECTIONS` per host, the looks a reconciler makes at a time).

The guard (:mod:`prodinf.outbound`) is kept whole: a new connection still resolves,
checks and connects to the very addresses it checked; a request to a host written as
a name, which a kept connection would send without connecting, checks what the name
resolves to now (``recheck``), so a name that moved to a denied address is refused at
the next look. A session keeps no cookie between requests (one job's URL never sends
another's), and the credentials in a URL go with that URL's requests only.

:func:`get_kept` sends a GET straight to the session's guarded adapter (the very
``GuardedAdapter.send`` a session calls, with its checks), without the session's own
machinery (preparing and re-quoting the URL, merging settings, cookies, hooks,
redirects), which cost more CPU than the rest of a small look. A URL that machinery
would change goes through the session as before: credentials in it or in
``~/.netrc``, a proxy, a URL that needs quoting or is not http(s); an answer that
redirects is followed by the session's own code, each redirect checked.

Sessions belong to the process that made them: a forked child (a Celery pool process)
forgets its parent's and makes its own. At most :data:`HOSTS`
sessions are kept, the least recently used closed first, and one unused for
:data:`IDLE` seconds is closed.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.cookies import RequestsCookieJar
from requests.hooks import default_hooks
from requests.structures import CaseInsensitiveDict
from requests.utils import get_netrc_auth, requote_uri, select_proxy

from prodinf.outbound import Guard

if TYPE_CHECKING:
    from requests.sessions import _Settings

__all__ = ["CONNECTIONS", "HOSTS", "IDLE", "close_all", "get_kept", "session_for"]

#: Sessions (hosts) kept per process.
HOSTS = 64
#: Seconds a session may go unused before it is closed.
IDLE = 300.0
#: Connections kept open per host.
CONNECTIONS = 8

_Key = tuple[Guard, str, str]

_lock = threading.Lock()
_sessions: OrderedDict[_Key, tuple[requests.Session, float]] = OrderedDict()


def _forked() -> None:
    """In a forked child: forget the parent's sessions (their sockets and locks are the
    parent's; touching them could block on a lock held at the fork) and its lock."""
    global _lock, _sessions
    _lock = threading.Lock()
    _sessions = OrderedDict()


os.register_at_fork(after_in_child=_forked)


def session_for(url: str, guard: Guard) -> requests.Session:
    """The kept session for ``url``'s scheme, host and port under ``guard`` (made the
    first time). Do not close it; read each response to its end (or close it) so its
    connection goes back to the pool."""
    parts = urlsplit(url)
    key = (guard, parts.scheme.lower(), parts.netloc.rpartition("@")[2].lower())
    now = time.monotonic()
    stale: list[requests.Session] = []
    with _lock:
        found = _sessions.pop(key, None)
        session = found[0] if found is not None else _new(guard)
        while _sessions and (
            len(_sessions) >= HOSTS or now - next(iter(_sessions.values()))[1] > IDLE
        ):
            stale.append(_sessions.popitem(last=False)[1][0])
        _sessions[key] = (session, now)
    for old in stale:
        old.close()
    return session


def get_kept(
    url: str, guard: Guard, *, headers: dict[str, str], timeout: tuple[float, float]
) -> requests.Response:
    """GET ``url`` on its kept session (:func:`session_for`), straight through the
    session's guarded adapter when the session would send it unchanged, else through
    the session. Errors are raised as ``session.get`` raises them; read the response to
    its end (or close it)."""
    session = session_for(url, guard)
    if not _plain(url):
        return session.get(url, headers=headers, timeout=timeout)
    settings = session.merge_environment_settings(url, {}, None, None, None)
    if select_proxy(url, settings["proxies"]):
        return session.get(url, headers=headers, timeout=timeout)
    request = requests.PreparedRequest()
    request.method, request.url, request.body = "GET", url, None
    sent_headers: dict[str, Any] = {**session.headers, **headers}
    request.headers = CaseInsensitiveDict(sent_headers)
    request.hooks = default_hooks()
    sent: dict[str, Any] = {
        "timeout": timeout,
        "verify": settings["verify"],
        "cert": settings["cert"],
        "proxies": settings["proxies"],
    }
    response = session.get_adapter(url).send(request, **sent)
    if response.is_redirect:  # followed as the session follows it: each one checked
        request.prepare_cookies(RequestsCookieJar())  # none: what the session would send
        history = [response, *session.resolve_redirects(response, request, **sent)]
        response = history.pop()
        response.history = history
    return response


def _plain(url: str) -> bool:
    """True if a session would send ``url`` as it is: http(s), a valid host and port,
    no credentials (in it or in ``~/.netrc``), nothing to quote."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not parts.netloc.startswith(("*", "."))
        and "@" not in parts.netloc
        and url.isascii()
        and requote_uri(url) == url
        and get_netrc_auth(url) is None
    )


def close_all() -> None:
    """Close every kept session of this process (the next look opens new connections)."""
    with _lock:
        stale = [session for session, _ in _sessions.values()]
        _sessions.clear()
    for session in stale:
        session.close()


def _new(guard: Guard) -> requests.Session:
    session = _KeptSession()
    # A few pools: one for the host, and for the hosts its redirects lead to.
    adapter = guard.adapter(recheck=True, pool_connections=4, pool_maxsize=CONNECTIONS)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return session


#: What requests reads from the environment at each request to an http(s) URL: the
#: proxies (and those bypassing them) and the CA bundle.
_ENVIRONMENT = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)


class _KeptSession(requests.Session):
    """A session that works out what the environment says for a URL's host (proxies,
    bypasses, CA bundle) again only when one of those variables changed, not by a walk
    through the whole environment at each request (a good part of a small look's cost)."""

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[str | None, ...], _Settings] = {}

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> _Settings:
        if proxies or stream is not None or verify is not None or cert is not None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(str(url))
        key = (parts.scheme, parts.netloc, *(os.environ.get(name) for name in _ENVIRONMENT))
        if key not in self._environment:
            if len(self._environment) >= 16:
                self._environment.clear()
            self._environment[key] = super().merge_environment_settings(url, {}, None, None, None)
        found = self._environment[key]
        return {**found, "proxies": dict(found["proxies"])}  # the caller may change it
