"""What the portal accepts over HTTP, and what every answer carries.

- **Trusted hosts.** A request whose ``Host`` is not one of the portal's names
  (:func:`allowed_hosts`) gets a 400 that does not repeat it, before anything else
  looks at it, so a page elsewhere cannot reach the portal through a name of its own
  pointed at the portal's address (DNS rebinding), and no link is built from a
  forged ``Host``.
- **Mutating API calls** (POST, PUT, PATCH, DELETE under ``/api/v1``) come from the
  portal's own pages or from programs, never from another site: an ``Origin`` other
  than the portal's is a 403, and a body that is not JSON a 415. A browser sends a
  cross-site "simple request" (a form, ``text/plain``) without asking first; JSON it
  must ask for, and the portal never says yes. An empty body with no type is taken:
  a call with nothing to say (cancel, retry, stop) sends none.
- **Size.** A body over ``PRODINF_MAX_REQUEST_BYTES`` is a 413 naming ``body``.
- **Headers** on every answer: a Content-Security-Policy the pages work under (no
  inline script or style anywhere, Swagger UI included), ``X-Frame-Options``,
  ``nosniff``, a referrer policy; session cookies ``HttpOnly``, ``SameSite=Lax``,
  ``Secure`` behind https.
- **The secret key.** The built-in one is logged as a warning, and refused when the
  portal listens beyond loopback.
- **An open portal.** With ``PRODINF_AUTH=none`` the portal serves only on loopback,
  unless told it may be open (``--insecure``, ``PRODINF_INSECURE``), which it then says
  in the log at every start (:func:`refuse_an_open_portal`).
- **The server** started by ``prodinf up``/``portal`` names no versions.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Flask, Response, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler
from werkzeug.serving import make_server as werkzeug_server

from prodinf.config import Settings
from prodinf.exceptions import Forbidden, PermanentError, ValidationError
from prodinf.redact import redact_text

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "LOOPBACK_NAMES",
    "allowed_hosts",
    "host_is_allowed",
    "install",
    "listens_on_loopback",
    "make_server",
    "refuse_an_open_portal",
]

log = logging.getLogger(__name__)

#: The names of this machine's loopback interface: always answered to.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
#: Addresses that mean "every interface".
WILDCARDS = ("", "0.0.0.0", "::", "*")
#: What the portal's pages, static files and Swagger UI need, and nothing more: no
#: inline script or style, no other origin, no frames, forms posting only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API = "/api/v1/"
#: Paths answered whatever the Host: a load balancer's health check and Prometheus
#: (whose service discovery finds targets by address) may name an address.
ANY_HOST = ("/health", "/metrics")
#: The secret key prodinf ships with (anyone can read it in the source).
BUILT_IN_SECRET = Settings.model_fields["secret_key"].get_default().get_secret_value()


class UnsupportedMediaType(PermanentError):
    """Raised when a mutating API call's body is not JSON."""

    status_code = 415


class BodyTooLarge(PermanentError):
    """Raised when a request's body is larger than ``PRODINF_MAX_REQUEST_BYTES``."""

    status_code = 413


class BadHost(PermanentError):
    """Raised when a request names a ``Host`` the portal does not answer to."""

    status_code = 400


def listens_on_loopback(host: str) -> bool:
    """Whether an address to listen on (``PRODINF_HOST``, ``--host``) is reachable from
    this machine only: ``localhost`` or a loopback address, not a wildcard or a name."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _name(host: str) -> str:
    """A host name as compared: lower case, no brackets, no trailing dot."""
    return host.strip().lower().strip("[]").rstrip(".")


def allowed_hosts(settings: Settings) -> tuple[str, ...]:
    """The host names the portal answers to: the loopback names, the host of
    ``PRODINF_PUBLIC_URL``, ``PRODINF_HOST`` unless a wildcard, and
    ``PRODINF_ALLOWED_HOSTS``."""
    names = list(LOOPBACK_NAMES)
    if settings.public_url:
        names.append(urlsplit(settings.public_url).hostname or "")
    if settings.host.strip() not in WILDCARDS:
        names.append(settings.host)
    names.extend(settings.allowed_hosts)
    return tuple(dict.fromkeys(_name(n) for n in names if _name(n)))


def _hostname(header: str) -> str | None:
    """The name in a ``Host`` header (``name``, ``name:port``, ``[v6]:port``); None
    for a malformed one."""
    header = header.strip()
    if header.startswith("["):
        name, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest.removeprefix(":")
    else:
        name, _, port = header.partition(":")
    if port and not port.isdigit():
        return None
    name = _name(name)
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789.-_:")
    if not name or not set(name) <= allowed:
        return None
    return name


def host_is_allowed(header: str, allowed: tuple[str, ...]) -> bool:
    """Whether a request's ``Host`` header names one of ``allowed``: a name, a domain
    and its subdomains (``.example.org``), or ``*``; any port."""
    name = _hostname(header)
    if name is None:
        return False
    for entry in allowed:
        if entry == "*" or entry == name:
            return True
        if entry.startswith(".") and (name == entry[1:] or name.endswith(entry)):
            return True
    return False


def _origin_of(url: str) -> tuple[str, str] | None:
    """``(scheme, host:port)`` of an origin or URL, the port always written."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return None
    return parts.scheme, f"{_name(parts.hostname)}:{port}"


def _own_origin(origin: str, settings: Settings) -> bool:
    """Whether a request's ``Origin`` is the portal itself: the host (and port) the
    request was sent to (a trusted one, checked first), or ``PRODINF_PUBLIC_URL``."""
    given = _origin_of(origin)
    if given is None:  # "null" (a sandboxed or privacy-minded page), or garbage
        return False
    if settings.public_url and given == _origin_of(settings.public_url):
        return True
    here = _origin_of(f"{given[0]}://{request.host}")
    return here is not None and given[1] == here[1]


def _has_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "")


def _refuse_nul() -> None:
    """A 400 naming the query arg or path part that holds a NUL character (no job store
    keeps one: PostgreSQL would refuse it, unnamed)."""
    given = [*request.args.items(multi=True), *(request.view_args or {}).items()]
    for name, value in given:
        if "\x00" in name or "\x00" in str(value):
            shown = name.replace("\x00", "?")
            raise ValidationError(f"{shown} has a NUL character", field=shown)


def _check_mutating_api_call(settings: Settings) -> None:
    origin = request.headers.get("Origin")
    if origin is not None and not _own_origin(origin, settings):
        raise Forbidden(
            "a call that changes something is not taken from another site's page: its "
            "Origin is not this portal",
            field="Origin",
        )
    if request.is_json or (not request.content_type and not _has_body()):
        return
    given = request.mimetype or "no Content-Type"
    raise UnsupportedMediaType(
        f"this call takes a JSON body (Content-Type: application/json), not {given}; "
        "send no body at all when there is nothing to say",
        field="Content-Type",
    )


MAKE_A_KEY = "python -c 'import secrets; print(secrets.token_hex(32))'"


def refuse_built_in_secret(settings: Settings) -> None:
    """``ValidationError`` naming ``PRODINF_SECRET_KEY`` when the portal would listen
    beyond loopback (``PRODINF_HOST``, or ``--host`` put there) with the built-in secret
    key, which anyone who read prodinf's source could sign its cookies with."""
    if settings.secret_key.get_secret_value() != BUILT_IN_SECRET:
        return
    if not listens_on_loopback(settings.host):
        raise ValidationError(
            f"the portal would listen on {settings.host} with the built-in secret key, "
            "which anyone can read in prodinf's source and sign its session cookies "
            f"with: set PRODINF_SECRET_KEY to a long random value ({MAKE_A_KEY})",
            field="PRODINF_SECRET_KEY",
        )


def refuse_an_open_portal(
    settings: Settings, host: str, *, insecure: bool = False, flag: str | None = None
) -> str | None:
    """Refuse to serve on ``host`` beyond loopback with ``PRODINF_AUTH=none``, where
    anyone who reaches the portal could do anything: ``ValidationError`` naming
    ``PRODINF_AUTH`` and how to run open anyway (``PRODINF_INSECURE=true``, or the
    command's ``flag``). With ``insecure`` (the flag given) or ``PRODINF_INSECURE`` it
    may: the warning that says so is logged (``prodinf.portal``) and returned. None when
    there is nothing to say: authentication is on, or ``host`` is loopback."""
    if settings.auth != "none" or listens_on_loopback(host):
        return None
    if not (insecure or settings.insecure):
        anyway = (
            f"start with {flag} (or PRODINF_INSECURE=true)" if flag else "set PRODINF_INSECURE=true"
        )
        raise ValidationError(
            f"the portal would listen on {host} with PRODINF_AUTH=none: anyone who reaches "
            "it could submit, cancel and read every job. Turn authentication on "
            "(PRODINF_AUTH=users, and prodinf user add NAME --role admin), listen on "
            f"127.0.0.1, or {anyway} to run open anyway",
            field="PRODINF_AUTH",
        )
    given = flag if insecure and flag else "PRODINF_INSECURE=true"
    warning = (
        f"INSECURE: the portal listens on {host} with PRODINF_AUTH=none ({given}): "
        "anyone who reaches it may submit, cancel and read every job"
    )
    logging.getLogger("prodinf.portal").warning("%s", warning)
    return warning


def check_secret_key(settings: Settings) -> None:
    """Refuse the built-in secret key beyond loopback (:func:`refuse_built_in_secret`);
    on loopback, log a warning that it is in use."""
    refuse_built_in_secret(settings)
    if settings.secret_key.get_secret_value() == BUILT_IN_SECRET:
        log.warning(
            "the portal uses the built-in secret key (PRODINF_SECRET_KEY unset): fine on "
            "loopback; set it to a long random value (%s) before it listens elsewhere",
            MAKE_A_KEY,
        )


def install(app: Flask, settings: Settings) -> None:
    """Harden ``app``: hosts, mutating API calls, body size, headers, cookies, secret.

    :raises ValidationError: naming ``PRODINF_SECRET_KEY``, for the built-in key on an
        address beyond loopback.
    """
    check_secret_key(settings)
    https = bool(settings.public_url and settings.public_url.startswith("https:"))
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=https,
    )
    hosts = allowed_hosts(settings)
    limit = settings.max_request_bytes

    def guard() -> Any:
        """First of every request: refuse a foreign Host, a body too large, and a
        mutating API call from another site or not in JSON."""
        if request.path not in ANY_HOST and not host_is_allowed(request.host, hosts):
            raise BadHost(
                "this portal does not answer to the host name this request was sent to; "
                "its names are set by PRODINF_ALLOWED_HOSTS",
                field="Host",
            )
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge(
                f"the request body is larger than {limit} bytes (PRODINF_MAX_REQUEST_BYTES)",
                field="body",
            )
        if request.path.startswith(API):
            _refuse_nul()
            if request.method in MUTATING:
                _check_mutating_api_call(settings)
        return None

    # Ahead of every other before_request (logins, CSRF, rate limits), whenever they
    # were registered: nothing else should see a request this refuses.
    app.before_request_funcs.setdefault(None, []).insert(0, guard)

    @app.after_request
    def security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


class PortalRequestHandler(WSGIRequestHandler):
    """Werkzeug's request handler, its ``Server`` header naming neither Werkzeug's nor
    Python's version."""

    @property
    def server_version(self) -> str:  # type: ignore[override]
        return "prodinf"

    def version_string(self) -> str:
        return "prodinf"

    def log(self, type: str, message: str, *args: Any) -> None:
        # A request line may carry a URL with a password, percent-encoded once or (in a
        # login's ?next=) twice: /api/v1/databases?server_uri=mysql://u:pw@host
        super().log(type, message, *(_masked(a) if isinstance(a, str) else a for a in args))


#: Each control character as ``\\xNN``.
_CONTROL_CHARACTERS = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


def _masked(text: str) -> str:
    """``text`` (a request line) as it is, or, when it holds a credential, decoded with
    the credential masked and control characters escaped (no forged log lines)."""
    decoded = text
    for _ in range(3):
        decoded, before = unquote(decoded), decoded
        if decoded == before:
            break
    masked = redact_text(decoded)
    return text if masked == decoded else masked.translate(_CONTROL_CHARACTERS)


def make_server(host: str, port: int, app: Flask) -> BaseWSGIServer:
    """A threaded Werkzeug server for ``app`` on ``host:port`` (``prodinf up``,
    ``prodinf portal``; gunicorn in production names no versions either)."""
    return werkzeug_server(host, port, app, threaded=True, request_handler=PortalRequestHandler)
