"""Webhooks: POST a JSON document to a URL, signed so the receiver can trust it.

The body is compact JSON with sorted keys. Headers:

``X-Prodinf-Signature: sha256=<hex>``
    HMAC-SHA256 of the exact body bytes, keyed with ``PRODINF_WEBHOOK_SECRET``
    (absent when no secret is set). Receivers recompute it over the raw body and
    compare with ``hmac.compare_digest``; see :func:`signature`.
``X-Prodinf-Event``
    What happened, e.g. ``job.succeeded``.
``X-Prodinf-Delivery``
    The same id on every try of one delivery: a receiver that got it already can
    ignore the repeat (a try whose answer was lost is sent again).

Errors follow :mod:`prodinf.exceptions`: a receiver that is unreachable, slow
(``PRODINF_WEBHOOK_TIMEOUT``), answers 5xx, 408 or 429 raises
:class:`RemoteUnavailable` (try again later, honouring ``Retry-After``); one that
answers any other 4xx, or a redirect (not followed, so a signed body never goes
somewhere else), raises :class:`PermanentError`; one whose address
``PRODINF_DENIED_NETWORKS`` refuses (:mod:`prodinf.outbound`) is never called:
:class:`AddressDenied`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import requests

from prodinf import metrics
from prodinf.config import Settings
from prodinf.exceptions import PermanentError, RemoteUnavailable
from prodinf.outbound import Guard
from prodinf.redact import redact_text

__all__ = ["SIGNATURE_HEADER", "encode", "post", "signature"]

SIGNATURE_HEADER = "X-Prodinf-Signature"
#: Answers that mean "try again later", besides 5xx.
_RETRYABLE = frozenset({408, 425, 429})
#: Longest Retry-After honoured, seconds.
_MAX_RETRY_AFTER = 3600.0


def encode(document: Any) -> bytes:
    """The body prodinf sends (and signs) for ``document``: compact, sorted JSON."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode("utf-8")


def signature(secret: str, body: bytes) -> str:
    """The ``X-Prodinf-Signature`` value of ``body``: ``sha256=`` and the hex HMAC."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def post(
    url: str, document: Any, *, event: str, delivery: str, settings: Settings
) -> dict[str, Any]:
    """POST ``document`` to ``url``; return ``{"status_code", "delivery"}`` once it is taken.

    Each call is counted (``prodinf_notifications_total{channel="webhook"}``): delivered
    or error."""
    try:
        taken = _post(url, document, event=event, delivery=delivery, settings=settings)
    except Exception:
        metrics.notified("webhook", "error")
        raise
    metrics.notified("webhook", "delivered")
    return taken


def _post(
    url: str, document: Any, *, event: str, delivery: str, settings: Settings
) -> dict[str, Any]:
    body = encode(document)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "prodinf-webhook",
        "X-Prodinf-Event": event,
        "X-Prodinf-Delivery": delivery,
    }
    secret = settings.webhook_secret.get_secret_value()
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, body)
    shown = redact_text(url)
    try:
        with Guard.of(settings).session() as session:
            response = session.post(
                url,
                data=body,
                headers=headers,
                timeout=settings.webhook_timeout,
                allow_redirects=False,
            )
            response.close()
    except requests.Timeout as exc:
        raise RemoteUnavailable(
            f"webhook {shown} did not answer within {settings.webhook_timeout:g}s"
        ) from exc
    except requests.RequestException as exc:
        raise RemoteUnavailable(f"webhook {shown} unreachable: {type(exc).__name__}") from exc
    code = response.status_code
    if code < 300:
        return {"status_code": code, "delivery": delivery}
    if code >= 500 or code in _RETRYABLE:
        raise RemoteUnavailable(
            f"webhook {shown} answered {code}", retry_after=_retry_after(response)
        )
    if code < 400:
        raise PermanentError(
            f"webhook {shown} answered {code} (a redirect); webhooks do not follow redirects"
        )
    raise PermanentError(f"webhook {shown} refused the call: {code}")


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER) if seconds == seconds else None
