"""Mailing from a step: deliver once, recorded the moment the server accepts.

``send_once(ctx, mail)`` records the delivery under ``delivered`` between the SMTP
server's acceptance of the mail and the goodbye (``deliver(..., accepted=...)``),
so a step run again after a crash finds it recorded and sends nothing. The one
window left is a process killed after the server's reply and before that commit:
then the mail goes again, with the same Message-ID (made from the job id and the
step), so mail systems that deduplicate by Message-ID show it once.
"""

from __future__ import annotations

from typing import Any

from prodinf import Retry, StepContext
from prodinf.mail import Mail, deliver

__all__ = ["DELIVERY", "send_once"]

#: Until the mail is handed over: a mail server down for a day is still retried.
DELIVERY = Retry(attempts=100_000, backoff=2.0, max_backoff=300.0)


def send_once(ctx: StepContext[Any], mail: Mail) -> str:
    """Deliver ``mail`` unless this step delivered it already; return its Message-ID."""
    done = ctx.recorded("delivered")
    if done is not None:
        return str(done)
    deliver(mail, ctx.settings, accepted=lambda message_id: ctx.record("delivered", message_id))
    return mail.message_id
