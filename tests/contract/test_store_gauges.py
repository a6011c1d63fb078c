"""The job store contract for what a scrape of ``/metrics`` reads (``store.gauges``), and
for ``after_commit``, on every backend."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from prodinf import Flow, Step
from prodinf.engine.registry import job_kind
from prodinf.store import JobStore
from prodinf.store.gauges import unfinished
from prodinf.store.models import JOBS
from prodinf.store.repository import after_commit
from prodinf.store.types import utcnow
from tests.world import World


def test_the_unfinished_work_by_kind_queue_and_stage(world: World) -> None:
    """Given jobs queued, waiting and ended, and handovers at two stages, then the store
    reports the unfinished ones by kind and status, the oldest queued of each queue, the
    waiting steps by kind and the handovers by their first step not succeeded."""
    registry = world.registry
    job_kind("g_nap", into=registry, queue="slow")(
        lambda _p: Flow.of(Step("nap", lambda ctx: ctx.wait(3600, "napping")))
    )
    job_kind("g_done", into=registry, queue="fast")(
        lambda _p: Flow.of(Step("do", lambda ctx: "done"))
    )
    stages = (Step("check", lambda ctx: "ok"), Step("copy", lambda ctx: ctx.wait(3600, "copy")))
    job_kind("g_handover", into=registry)(lambda _p: Flow.of(*stages, Step("end", lambda c: 1)))

    world.drive(world.submit("g_nap"))
    world.drive(world.submit("g_done"))
    old = world.submit("g_done")
    world.submit("g_done")
    long_ago = utcnow() - timedelta(hours=2)
    with world.store.transaction() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id == old).values(updated_at=long_ago))
    world.drive(world.submit("g_handover"))
    world.submit("g_handover")

    found = unfinished(world.store, handover_kind="g_handover")

    assert found.jobs == {
        ("g_nap", "waiting"): 1,
        ("g_done", "queued"): 2,
        ("g_handover", "waiting"): 1,
        ("g_handover", "queued"): 1,
    }
    assert set(found.oldest_queued) == {"fast", world.settings.queue_jobs}
    assert abs(found.oldest_queued["fast"] - long_ago) < timedelta(seconds=1)
    assert found.waits == {"g_nap": 1, "g_handover": 1}
    assert found.stages == {"copy": 1, "check": 1}


def test_after_commit_runs_once_committed_and_never_after_a_rollback(
    any_store: JobStore,
) -> None:
    """Given a transaction that hands ``after_commit`` a call, then the call runs once it
    has committed; in one rolled back, never, not even with the next transaction on the
    same pooled connection."""
    ran: list[str] = []
    with any_store.transaction() as conn:
        after_commit(conn, lambda: ran.append("committed"))
        assert ran == []  # not before the commit
    assert ran == ["committed"]

    with pytest.raises(RuntimeError), any_store.transaction() as conn:
        after_commit(conn, lambda: ran.append("rolled back"))
        raise RuntimeError("the work failed")
    for _ in range(3):  # the pool hands the same connection back
        with any_store.transaction():
            pass
    assert ran == ["committed"]
