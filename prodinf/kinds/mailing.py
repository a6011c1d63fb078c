"""Mailing from a step: deliver once, recorded the moment the server accepts.

``send_once(ctx, mail)`` records the delivery under ``delivered`` between the SMTP
server's acceptance of the mail and the goodbye (``deliver(..., accepted=...)``),
so a step run again after a crash finds it recorded and sends nothing. A store
that is down at that moment is tried again for ``RECORD_FOR`` seconds, the SMTP
session held open meanwhile. The one window left is a process killed after the
server's reply and before that commit (or a store down for longer): then the mail
goes again, with the same Message-ID (made from the job id and the step), so mail
systems that deduplicate by Message-ID show it once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prodinf import Retry, StepContext
from prodinf.exceptions import PermanentError, ProdinfError, StoreUnavailable
from prodinf.mail import Mail, deliver
from prodinf.redact import redact_text

__all__ = ["DELIVERY", "RECORD_FOR", "composing", "send_once"]

log = logging.getLogger(__name__)

#: Seconds to keep trying to record a delivery the server accepted while the store
#: is down, before giving up (the step fails, and runs again: a second copy).
RECORD_FOR = 20.0

#: Until the mail is handed over: a mail server down for a day is still retried.
DELIVERY = Retry(attempts=100_000, backoff=2.0, max_backoff=300.0)


@contextmanager
def composing(what: str) -> Iterator[None]:
    """Any error while ``what`` (a mail) is made from its templates and the job's data is
    a ``PermanentError``: rendering the same data again fails the same way, so retrying
    it under ``DELIVERY``'s 100,000 attempts could never help (a Jinja ``UndefinedError``
    on a snapshot that lacks a field, a ``TypeError`` in a filter)."""
    try:
        yield
    except ProdinfError:
        raise
    except Exception as exc:
        raise PermanentError(
            f"{what} could not be made: {type(exc).__name__}: {redact_text(str(exc))[:500]}"
        ) from None


def send_once(ctx: StepContext[Any], mail: Mail) -> str:
    """Deliver ``mail`` unless this step delivered it already; return its Message-ID."""
    done = ctx.recorded("delivered")
    if done is not None:
        return str(done)
    deliver(mail, ctx.settings, accepted=lambda message_id: _record(ctx, message_id))
    return mail.message_id


def _record(ctx: StepContext[Any], message_id: str) -> None:
    """Record the delivery of ``message_id``, trying for ``RECORD_FOR`` s if the store is down."""
    give_up = time.monotonic() + RECORD_FOR
    while True:
        try:
            ctx.record("delivered", message_id)
            return
        except StoreUnavailable as exc:
            if time.monotonic() >= give_up:
                raise
            log.warning("mail %s accepted; recording it failed, trying again: %s", message_id, exc)
            time.sleep(1.0)
