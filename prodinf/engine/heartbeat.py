"""Keeps the leases of running steps alive: one thread per runner renews them all.

A step is held under a lease; while it runs, the lease is renewed every third
of its length, so it runs out only if the worker dies (or stops answering).
One thread serves every step its runner holds, so running a step costs no
thread of its own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import timedelta
from typing import NamedTuple

from prodinf.exceptions import StoreUnavailable, TransientError
from prodinf.store import JobStore
from prodinf.store.leases import renew
from prodinf.store.types import utcnow

__all__ = ["Heartbeat", "Lease"]

log = logging.getLogger(__name__)


class Lease(NamedTuple):
    """A step of a job held by ``owner``."""

    job_id: str
    step: str
    owner: str


class _Beats:
    """One process's heartbeat thread and the leases it renews."""

    def __init__(self) -> None:
        self.wake = threading.Condition()
        #: Each lease held, and when (``time.monotonic``) to renew it next.
        self.due: dict[Lease, float] = {}
        self.thread: threading.Thread | None = None


class Heartbeat:
    """Renews the ``Lease`` s held with ``hold`` every third of ``lease``, until ``release``.

    The thread starts with the first lease held, in the process that holds it (a
    worker may fork after making its runner), and ends once it has had none for
    ``idle`` seconds. A renewal only touches a step its owner still holds, so
    one that overlaps a ``release`` changes nothing the runner has recorded.
    """

    def __init__(self, store: JobStore, lease: timedelta, *, idle: float = 60.0) -> None:
        self.store = store
        self.lease = lease
        self.period = lease.total_seconds() / 3
        self.idle = idle
        #: Per process: a forked child has none of its parent's threads.
        self._beats: dict[int, _Beats] = {}

    def hold(self, lease: Lease) -> None:
        """Renew ``lease`` from a third of its length from now on."""
        beats = self._here()
        with beats.wake:
            beats.due[lease] = time.monotonic() + self.period
            if beats.thread is None:
                beats.thread = threading.Thread(
                    target=self._beat, args=(beats,), daemon=True, name="prodinf-heartbeat"
                )
                beats.thread.start()
            else:
                beats.wake.notify()

    def release(self, lease: Lease) -> None:
        """Stop renewing ``lease``."""
        beats = self._here()
        with beats.wake:
            beats.due.pop(lease, None)

    def _here(self) -> _Beats:
        pid = os.getpid()
        beats = self._beats.get(pid)
        if beats is None:  # setdefault: threads that race here all get the same one
            beats = self._beats.setdefault(pid, _Beats())
        return beats

    def _beat(self, beats: _Beats) -> None:
        while True:
            with beats.wake:
                now = time.monotonic()
                due = [lease for lease, at in beats.due.items() if at <= now]
                if not due:
                    if beats.due:
                        beats.wake.wait(min(beats.due.values()) - now)
                    elif not beats.wake.wait(self.idle) and not beats.due:
                        beats.thread = None  # hold() starts another when needed
                        return
                    continue
                for lease in due:
                    beats.due[lease] = now + self.period
            for lease in due:
                self._renew_logged(lease)

    def _renew_logged(self, lease: Lease) -> None:
        try:
            self._renew(lease)
        except (StoreUnavailable, TransientError) as exc:
            log.warning("heartbeat for job %s failed: %s", lease.job_id, exc)
        except Exception:  # the thread serves every lease: it must go on
            log.exception("heartbeat for job %s failed", lease.job_id)

    def _renew(self, lease: Lease) -> None:
        renew(self.store, lease.job_id, lease.step, lease.owner, utcnow() + self.lease)
