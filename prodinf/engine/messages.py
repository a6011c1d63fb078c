"""Sending a job's message, and recording that the broker confirmed it.

A job is committed with its ``next_run_at`` ``resend_after`` seconds ahead: until
its message is confirmed sent it is due again soon, so a publish that fails, or
a process killed between the commit and the publish, costs seconds. Once the
broker confirms the message, ``next_run_at`` moves ``redrive_after`` ahead (the
message may still be lost in the broker; then it is sent again). A duplicate
message costs nothing: the runner finds the step held or done and returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

from prodinf.config import Settings
from prodinf.exceptions import ProdinfError, StoreUnavailable
from prodinf.store import JobStore
from prodinf.store.due import mark_sent
from prodinf.store.types import utcnow

__all__ = ["LANE_SUFFIX", "Messages", "Publish", "lane"]

log = logging.getLogger(__name__)

#: Publishes a run message for (job id, queue).
Publish = Callable[[str, str], None]

#: Each queue has a lane, ``<queue>.due``: what is due again (a due wait, a woken step,
#: a step whose worker died, a message never confirmed) goes there, and a worker
#: consumes both, so a deep queue of new work never holds up work already under way.
LANE_SUFFIX = ".due"


def lane(queue: str) -> str:
    """The lane of ``queue``: where that queue's due and woken jobs are sent."""
    return queue if queue.endswith(LANE_SUFFIX) else queue + LANE_SUFFIX


class Messages:
    """Publishes run messages and moves a job's ``next_run_at`` once one is confirmed."""

    def __init__(self, store: JobStore, publish: Publish, settings: Settings) -> None:
        self.store = store
        self.publish = publish
        self.resend_after = timedelta(seconds=settings.resend_after)
        self.redrive_after = timedelta(seconds=settings.redrive_after)

    def soon(self, now: datetime) -> datetime:
        """When a job committed ``now`` is due again if its message is not confirmed."""
        return now + self.resend_after

    def send(self, job_id: str, queue: str, marked: datetime | None) -> None:
        """Publish ``job_id``'s message on ``queue``; raises ``BrokerUnavailable`` if the
        broker did not confirm it. With ``marked`` (the job's ``next_run_at`` while
        unconfirmed), the job is then due only after ``redrive_after``."""
        self.publish(job_id, queue)
        if marked is not None:
            self.sent([job_id], marked)

    def send_all(self, messages: Collection[tuple[str, str, datetime | None]]) -> None:
        """Publish each ``(job id, queue, marked)``, then record those the broker
        confirmed in one write per ``marked`` (new children share it; ``None``: nothing
        to record); one that is not confirmed is logged, and sent by the reconciler
        when its job is due."""
        confirmed: dict[datetime, list[str]] = {}
        for job_id, queue, marked in messages:
            try:
                self.publish(job_id, queue)
            except ProdinfError as exc:
                log.warning("job %s not published yet: %s", job_id, exc)
                continue
            if marked is not None:
                confirmed.setdefault(marked, []).append(job_id)
        for marked, job_ids in confirmed.items():
            self.sent(job_ids, marked)

    def sent(self, job_ids: Collection[str], marked: datetime) -> None:
        """Record that the messages of ``job_ids`` (due again at ``marked``) were confirmed."""
        try:
            mark_sent(self.store, job_ids, marked, utcnow() + self.redrive_after)
        except StoreUnavailable as exc:  # the message is out: at worst it is sent twice
            log.warning("could not record %d message(s) sent: %s", len(job_ids), exc)
