"""The heartbeat: one thread per runner renews every lease it holds, and only those.

A real heartbeat renews real leases in a real (SQLite) store: each test holds
steps the way a runner's claim leaves them (running, ``lease_owner`` set) and
watches ``lease_until`` move in the store. Nothing is counted inside a sleep:
the tests wait, with generous deadlines, for renewals they can see, and measure
the spacing of renewals from the times the heartbeat itself wrote.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from itertools import pairwise

from sqlalchemy import update

from prodinf import Step
from prodinf.engine.heartbeat import Heartbeat, Lease
from prodinf.status import StepStatus
from prodinf.store import StepRow
from prodinf.store.types import utcnow
from tests.waiting import wait_until
from tests.world import World

OWNER = "worker-1"


def held(world: World, kind: str, lease: float) -> Lease:
    """A job of a new one-step ``kind`` whose step a runner has claimed, as the store has it."""
    world.linear(kind, Step("work", lambda ctx: None))
    job_id = world.submit(kind)
    with world.store.session() as session:
        session.execute(
            update(StepRow)
            .where(StepRow.job_id == job_id)
            .values(
                status=StepStatus.RUNNING,
                lease_owner=OWNER,
                lease_until=utcnow() + timedelta(seconds=lease),
            )
        )
    return Lease(job_id, "work", OWNER)


class Renewals:
    """Every ``lease_until`` the store shows for some leases, read as often as the test asks.

    Each renewal writes "now + lease", so the spacing of the stored values is the
    spacing of the renewals, as the heartbeat's own clock had it.
    """

    def __init__(self, world: World, *leases: Lease) -> None:
        self.world = world
        self.seen: dict[Lease, list[datetime]] = {lease: [] for lease in leases}

    def look(self) -> None:
        for lease, values in self.seen.items():
            value = self.world.lease_until(lease.job_id, lease.step)
            assert value is not None
            if not values or value != values[-1]:
                values.append(value)

    def renewed(self, lease: Lease) -> int:
        """How many times ``lease`` has been renewed since it was first looked at."""
        self.look()
        return len(self.seen[lease]) - 1

    def wait(self, lease: Lease, times: int) -> None:
        """Wait until ``lease`` has been renewed ``times`` times (or fail after 10 s)."""
        wait_until(
            lambda: self.renewed(lease) >= times,
            10,
            f"{times} renewals of {lease.job_id}",
            interval=0.01,
        )

    def gaps(self, lease: Lease) -> list[float]:
        values = self.seen[lease]
        return [(b - a).total_seconds() for a, b in pairwise(values)]


def beating() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "prodinf-heartbeat"}


def test_renews_each_lease_held_every_third_of_a_lease_until_released(world: World) -> None:
    # Given a heartbeat with a 1.2 s lease, holding three steps' leases
    lease = 1.2
    a, b, c = (held(world, kind, lease) for kind in "abc")
    renewals = Renewals(world, a, b, c)
    renewals.look()
    heartbeat = Heartbeat(world.store, timedelta(seconds=lease), idle=5.0)
    for each in (a, b, c):
        heartbeat.hold(each)

    # When each has been renewed three times
    for each in (a, b, c):
        renewals.wait(each, 3)

    # Then the renewals came a third of a lease apart: never as late as half a lease
    # (a period drifted to two thirds would show here), nor more often than every sixth
    for each in (a, b, c):
        gaps = renewals.gaps(each)[:3]
        assert all(lease / 6 <= gap <= lease / 2 for gap in gaps), (each.job_id, gaps)

    # When a is released, then b, while c goes on being renewed (one thread renews
    # them all in turn, so a renewal under way at a release has landed by the second
    # renewal of c after it)
    heartbeat.release(a)
    renewals.wait(c, renewals.renewed(c) + 2)
    settled_a = renewals.seen[a][-1]
    heartbeat.release(b)
    renewals.wait(c, renewals.renewed(c) + 2)
    settled_b = renewals.seen[b][-1]
    renewals.wait(c, renewals.renewed(c) + 2)
    heartbeat.release(c)

    # Then neither was renewed after its release: over four renewals of c for a, two for b
    assert world.lease_until(a.job_id, a.step) == renewals.seen[a][-1] == settled_a
    assert world.lease_until(b.job_id, b.step) == renewals.seen[b][-1] == settled_b


def test_its_thread_ends_when_idle_and_starts_again_with_the_next_lease(world: World) -> None:
    # Given a heartbeat (3 s lease: the first renewal is a second after a hold) whose
    # thread ends after 0.2 s without a lease, and a lease held and released at once
    lease = 3.0
    heartbeat = Heartbeat(world.store, timedelta(seconds=lease), idle=0.2)
    others = beating()
    a = held(world, "a", lease)
    first = world.lease_until(a.job_id, a.step)
    heartbeat.hold(a)
    heartbeat.release(a)
    (thread,) = beating() - others

    # When it has had none for longer than that
    thread.join(timeout=5)

    # Then its thread has ended
    assert not thread.is_alive()

    # And a new lease starts a new thread, which renews it in the store
    b = held(world, "b", lease)
    renewals = Renewals(world, b)
    renewals.look()
    heartbeat.hold(b)
    (again,) = beating() - others
    assert again is not thread
    renewals.wait(b, 1)
    heartbeat.release(b)

    # And the lease released before its first renewal never was renewed
    assert world.lease_until(a.job_id, a.step) == first
