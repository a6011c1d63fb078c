"""The reconciler: publishes a message for every job that is due and has none.

A job is due when its ``next_run_at`` has passed: a wait has come due, a step's
lease ran out (its worker died), a message was never confirmed sent (a publish
refused, a process killed between commit and publish), or a queued job's message
has sat unconsumed for ``redrive_after`` seconds (it may be lost). Each due job
is claimed by moving its ``next_run_at`` ``resend_after`` ahead in a conditional
update, so several reconcilers (beat, or one inside each worker) never publish
the same job twice in one pass; once its message is confirmed, ``redrive_after``
ahead. A pass sends at most ``limit`` jobs, earliest due first, and stops at the
first message the broker refuses, releasing the rest (due now again): each pass
tries one message while the broker is down, and the first pass after it is back
sends the backlog, a batch per pass, not all at once. A reconciler killed between
its claim and its publishes leaves the jobs due ``resend_after`` later, for
another to send.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import timedelta

from prodinf.engine.messages import Publish
from prodinf.exceptions import BrokerUnavailable, ProdinfError
from prodinf.store import JobStore
from prodinf.store.due import claim_due, mark_sent, release
from prodinf.store.types import utcnow

__all__ = ["reconcile"]

log = logging.getLogger(__name__)


def reconcile(
    store: JobStore,
    publish: Publish,
    *,
    resend_after: float,
    redrive_after: float,
    queues: Collection[str] | None = None,
    limit: int = 200,
) -> int:
    """Publish the jobs that are due (on ``queues``, or all), at most ``limit``;
    return how many were sent."""
    now = utcnow()
    soon = now + timedelta(seconds=resend_after)
    claimed = claim_due(store, until=soon, queues=queues, limit=limit)
    sent: list[str] = []
    for n, (job_id, queue) in enumerate(claimed):
        try:
            publish(job_id, queue)
        except BrokerUnavailable as exc:  # the next pass tries the rest again
            log.warning(
                "reconciler stopped after %d of %d job(s): %s", len(sent), len(claimed), exc
            )
            release(store, [job for job, _ in claimed[n:]], soon)
            break
        except ProdinfError as exc:
            log.warning("reconciler could not publish job %s: %s", job_id, exc)
            continue
        sent.append(job_id)
    if sent:
        mark_sent(store, sent, soon, utcnow() + timedelta(seconds=redrive_after))
        log.info("reconciler published %d due job(s)", len(sent))
    return len(sent)
