"""The heartbeat: one thread per runner renews every lease it holds, and only those."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from prodinf.engine.heartbeat import Heartbeat, Lease
from prodinf.store import JobStore


class Recording(Heartbeat):
    """A heartbeat that records its renewals instead of writing them."""

    def __init__(self, lease: float, idle: float) -> None:
        super().__init__(JobStore("sqlite://"), timedelta(seconds=lease), idle=idle)
        self.renewed: list[str] = []

    def _renew(self, lease: Lease) -> None:
        self.renewed.append(lease.step)


def beating() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "prodinf-heartbeat"]


def test_renews_each_lease_held_every_third_of_a_lease_until_released() -> None:
    # Given a heartbeat with a 0.3 s lease, holding two steps' leases
    heartbeat = Recording(lease=0.3, idle=5.0)
    a, b = Lease("j", "a", "owner"), Lease("k", "b", "owner")
    heartbeat.hold(a)
    heartbeat.hold(b)

    # When a is released after 0.25 s and b after 0.45 s
    time.sleep(0.25)
    heartbeat.release(a)
    renewed_a = heartbeat.renewed.count("a")
    time.sleep(0.2)
    heartbeat.release(b)
    renewed_b = heartbeat.renewed.count("b")
    time.sleep(0.25)

    # Then each was renewed while held (every 0.1 s), and not after (but for one
    # renewal already under way when it was released)
    assert renewed_a >= 1 and renewed_b >= 2
    assert heartbeat.renewed.count("a") - renewed_a <= 1
    assert heartbeat.renewed.count("b") - renewed_b <= 1


def test_its_thread_ends_when_idle_and_starts_again_with_the_next_lease() -> None:
    # Given a heartbeat whose thread ends after 0.2 s without a lease
    heartbeat = Recording(lease=0.3, idle=0.2)
    others = set(beating())
    heartbeat.hold(Lease("j", "a", "owner"))
    heartbeat.release(Lease("j", "a", "owner"))
    (thread,) = set(beating()) - others

    # When it has had none for longer than that
    thread.join(timeout=2)

    # Then its thread has ended; and a new lease starts one that renews it
    assert not thread.is_alive()
    heartbeat.hold(Lease("j", "b", "owner"))
    time.sleep(0.15)
    heartbeat.release(Lease("j", "b", "owner"))
    assert heartbeat.renewed == ["b"]
