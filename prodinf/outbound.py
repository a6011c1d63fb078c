"""The guard on every request prodinf makes to a URL that a job or a user gave it.

``http_get``, ``wait_for_url``, ``email_when_complete`` and the URL watches, webhooks,
and the services that jobs run on (another prodinf, HTTP job services) all send their
requests through a session of a :class:`Guard`::

    guard = Guard.of(settings)                 # PRODINF_DENIED_NETWORKS, _ALLOWED_NETWORKS
    with guard.session() as session:
        session.get(url, timeout=10)           # AddressDenied: a denied address

Before a connection is opened, the host is resolved (``getaddrinfo``: every IPv4 and
IPv6 address of a name, and every numeric spelling of an address, ``2130706433``,
``0x7f.1``, ``127.1``, ``0177.0.0.1``, reads as the address it is), and each address is
compared with the deny list, the IPv4 address inside an IPv6 one (``::ffff:a.b.c.d``,
``64:ff9b::a.b.c.d``, ``2002:AABB:CCDD::``) as well. If any address is denied (and no
allowed network exempts it), no connection is made: :class:`AddressDenied`, a
``PermanentError`` naming the URL (password masked), the address and the network that
refused it, so the job fails at once and is not retried. Otherwise the connection goes
to those very addresses, so a name that resolves to something else a moment later (DNS
rebinding) gains nothing; TLS still checks the certificate of, and sends SNI for, the
name in the URL. Each redirect is a new request and is checked the same way.

Behind a proxy (``HTTP_PROXY``), the proxy resolves the name: the guard checks the
addresses the name has here before the request goes to the proxy, which cannot rule out
a name that changes in between. The proxy itself is the operator's and is not checked.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from pydantic import ValidationInfo
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection

from prodinf.config import DEFAULT_DENIED_NETWORKS, Settings, parse_networks
from prodinf.exceptions import AddressDenied
from prodinf.redact import redact_text

__all__ = ["Guard", "GuardedAdapter", "forms", "submitted"]

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

#: IPv6 prefixes that carry an IPv4 address in their last 32 bits, reaching it through a
#: translator (NAT64, RFC 6052) as ``::ffff:0:0/96`` reaches it on this host.
_NAT64 = (IPv6Network("64:ff9b::/96"), IPv6Network("64:ff9b:1::/48"))


def forms(address: Address) -> tuple[Address, ...]:
    """``address`` and the IPv4 address it reaches when it is an IPv6 spelling of one."""
    if isinstance(address, IPv4Address):
        return (address,)
    inner = address.ipv4_mapped or address.sixtofour
    if inner is None and any(address in prefix for prefix in _NAT64):
        inner = IPv4Address(int(address) & 0xFFFFFFFF)
    return (address,) if inner is None else (address, inner)


@dataclass(frozen=True)
class Guard:
    """Which addresses outbound requests may reach: none in ``denied`` unless it is in
    ``allowed`` too."""

    denied: tuple[Network, ...] = parse_networks(DEFAULT_DENIED_NETWORKS)
    allowed: tuple[Network, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> Guard:
        """The guard ``PRODINF_DENIED_NETWORKS`` and ``PRODINF_ALLOWED_NETWORKS`` set."""
        return _guard(settings.denied_networks, settings.allowed_networks)

    def refusing(self, address: Address) -> Network | None:
        """The denied network ``address`` is in (in any of its forms), or None if it may
        be reached."""
        both = forms(address)
        if any(a in net for a in both for net in self.allowed):
            return None
        return next((net for net in self.denied for a in both if a in net), None)

    def addresses(self, host: str, port: int | None, *, numeric: bool = False) -> list[str]:
        """Every address ``host`` resolves to, in the resolver's order, once each, after
        checking them all. With ``numeric``, no name is looked up: only a host written as
        an address (in any spelling) is read.

        :raises AddressDenied: one of them is denied; the message names the host, the
            address and the network.
        :raises socket.gaierror: the name does not resolve (or, ``numeric``, is a name).
        """
        host = host.strip("[]")
        found: list[str] = []
        flags = socket.AI_NUMERICHOST if numeric else 0
        for *_, sockaddr in socket.getaddrinfo(
            host, port, connection.allowed_gai_family(), socket.SOCK_STREAM, 0, flags
        ):
            text = str(sockaddr[0])
            if text in found:
                continue
            address = ip_address(text.partition("%")[0])
            network = self.refusing(address)
            if network is not None:
                shown = " (".join(str(a) for a in forms(address)) + ")" * (len(forms(address)) - 1)
                said = (
                    shown
                    if _same(host, address)
                    else f"{host} {'is' if _numeric(host) else 'resolves to'} {shown}"
                )
                raise AddressDenied(
                    f"{said}, in {network}, which PRODINF_DENIED_NETWORKS refuses",
                    field="url",
                    address=str(address),
                    network=str(network),
                )
            found.append(text)
        return found

    def check(self, url: str, *, resolve: bool = True) -> None:
        """Refuse ``url`` if its host resolves to a denied address (a name that does not
        resolve is left to the request, which reports it as usual). Without ``resolve``,
        only a host written as an address is checked, and no name is looked up.

        :raises AddressDenied: naming the address and the network (not the URL).
        """
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            return
        if parts.hostname:
            try:
                self.addresses(
                    parts.hostname,
                    port or (443 if parts.scheme == "https" else 80),
                    numeric=not resolve,
                )
            except socket.gaierror:
                return

    def adapter(self, **options: Any) -> GuardedAdapter:
        """A requests transport adapter that connects only where this guard allows
        (``options`` as ``HTTPAdapter``'s: ``max_retries``, pool sizes; and
        ``recheck``, see :class:`GuardedAdapter`)."""
        return GuardedAdapter(self, **options)

    def session(self, **options: Any) -> requests.Session:
        """A ``requests.Session`` whose http and https requests, redirects included, go
        through :meth:`adapter`."""
        session = requests.Session()
        adapter = self.adapter(**options)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session


def submitted(url: str, info: ValidationInfo) -> None:
    """For a params validator: at submission (``info.context["settings"]``, see
    ``Kind.validate``), a URL whose host is written as a denied address is refused, so
    the caller gets a 400 naming the field. Names are not looked up here: the request
    resolves and checks them when it is made (they may change in between anyway).

    :raises ValueError: the address and the network that refuses it.
    """
    settings = (info.context or {}).get("settings")
    if not isinstance(settings, Settings):
        return
    try:
        Guard.of(settings).check(url, resolve=False)
    except AddressDenied as exc:
        raise ValueError(exc.message) from None


def _numeric(host: str) -> bool:
    """True if ``host`` is an address in some spelling (``2130706433``, ``0x7f.1``)."""
    try:
        socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def _same(host: str, address: Address) -> bool:
    try:
        return ip_address(host.partition("%")[0]) == address
    except ValueError:
        return False


@lru_cache(maxsize=16)
def _guard(denied: str, allowed: str | None) -> Guard:
    return Guard(parse_networks(denied), parse_networks(allowed or ""))


class GuardedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections resolve, check and connect through a
    :class:`Guard`; :class:`AddressDenied` names the request's URL (masked).

    With ``recheck`` (an adapter whose connections are kept for later requests), each
    request to a host written as a name checks what the name resolves to now, so a
    name that has moved to a denied address is refused even where a connection opened
    to the address checked before could be reused."""

    def __init__(self, guard: Guard, *, recheck: bool = False, **options: Any) -> None:
        self.guard = guard
        self.recheck = recheck
        super().__init__(**options)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.guard)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        url = request.url or ""
        try:
            if proxies and select_proxy(url, proxies):
                # The proxy connects, not this adapter's pools: check what the name is here.
                self.guard.check(url)
            elif self.recheck and not _numeric(urlsplit(url).hostname or ""):
                self.guard.check(url)  # a kept connection would skip the check at connect
            return super().send(request, stream, timeout, verify, cert, proxies)
        except AddressDenied as exc:
            shown = redact_text(url)
            raise AddressDenied(
                f"{request.method} {shown} refused: {exc.message}",
                field=exc.field,
                url=shown,
                **{k: v for k, v in exc.details.items() if k != "url"},
            ) from None


def _open(conn: HTTPConnection, guard: Guard) -> socket.socket:
    """What urllib3's ``_new_conn`` does, to the addresses ``guard`` checked: each in
    turn until one answers."""
    try:
        found = guard.addresses(conn._dns_host, conn.port)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    error: Exception = NewConnectionError(conn, f"{conn.host} has no address")
    for address in found:
        try:
            sock = connection.create_connection(
                (address, conn.port),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except TimeoutError:
            error = ConnectTimeoutError(
                conn,
                f"Connection to {conn.host} ({address}) timed out. "
                f"(connect timeout={conn.timeout})",
            )
        except OSError as exc:
            error = NewConnectionError(
                conn, f"Failed to establish a new connection to {address}: {exc}"
            )
        else:
            sys.audit("http.client.connect", conn, conn.host, conn.port)
            return sock
    raise error


class _GuardedHTTPConnection(HTTPConnection):
    guard: ClassVar[Guard]

    def _new_conn(self) -> socket.socket:
        return _open(self, self.guard)


class _GuardedHTTPSConnection(HTTPSConnection):
    guard: ClassVar[Guard]

    def _new_conn(self) -> socket.socket:
        return _open(self, self.guard)


@lru_cache(maxsize=16)
def _pool_classes(guard: Guard) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pools whose connections go through ``guard`` (classes, as urllib3
    builds pools from them)."""
    plain = type("GuardedHTTPConnection", (_GuardedHTTPConnection,), {"guard": guard})
    tls = type("GuardedHTTPSConnection", (_GuardedHTTPSConnection,), {"guard": guard})
    return {
        "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": plain}),
        "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": tls}),
    }
