"""The job store contract under concurrency, on every backend: workers racing for a job,
leases taken over, the heartbeat beside a runner's locks, reconcilers racing.

Workers are runners in threads of the test, each with its own store connections
where it matters. Read each test as Given / When / Then.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from prodinf.config import Settings
from prodinf.engine.reconciler import reconcile
from prodinf.store import JobRow, JobStore, StepRow
from prodinf.store.types import utcnow
from tests.contract.lab import Lab, WorkerDied, at_once
from tests.waiting import wait_until
from tests.world import World

# -- concurrency -----------------------------------------------------------------------------


def test_two_runners_on_one_job_never_run_a_step_twice(world: World, lab: Lab) -> None:
    # Given a job whose three first steps can run in parallel, and a second worker
    # with its own connections
    lab.delay = 0.05
    other = JobStore(world.store.url)
    runners = [world.runner, world.new_runner(store=other)]
    try:
        for _round in range(3):
            job_id = world.submit("fanout")

            # When both workers drive it at the same instant
            def drive(i: int, job_id: str = job_id) -> None:
                runners[i].drive(job_id)

            at_once(2, drive)

            # Then every step ran exactly once and the job finished
            done = lab.done(job_id)
            assert sorted(done) == [("run", s) for s in ("join", "p1", "p2", "p3")]
            assert done[-1] == ("run", "join")
            assert world.store.describe(job_id)["status"] == "succeeded"
    finally:
        other.dispose()


def test_a_step_whose_lease_expired_is_taken_over(world: World, lab: Lab, tmp_path: Path) -> None:
    # Given a worker that died in the middle of step b, holding a 60 s lease
    settings = Settings(home=tmp_path / "lease", lease_seconds=60)
    lab.crash.add("b")
    job_id = world.submit("plain")
    with pytest.raises(WorkerDied):
        world.new_runner(settings).drive(job_id)
    assert world.steps(job_id) == {"a": "succeeded", "b": "running", "c": "pending"}
    held_until = world.lease_until(job_id, "b")

    # When another worker drives the job while the lease still holds
    world.new_runner(settings).drive(job_id)

    # Then it leaves the step alone, and the lease it respected is still the dead worker's
    assert lab.count(job_id, "run", "b") == 1
    assert held_until is not None and held_until > utcnow()
    assert world.lease_until(job_id, "b") == held_until

    # When the lease comes to its end (as if the minute had passed: it ends 0.2 s from
    # now), and another worker drives the job once the clock has passed it
    ends = utcnow() + timedelta(seconds=0.2)
    with world.store.session() as session:
        session.execute(
            update(StepRow)
            .where(StepRow.job_id == job_id, StepRow.name == "b")
            .values(lease_until=ends)
        )
    wait_until(lambda: utcnow() > ends, 10, "the clock to pass the lease's end", 0.02)
    world.new_runner(settings).drive(job_id)

    # Then it resumes b (the step runs again: steps are idempotent) and finishes the job
    assert lab.done(job_id) == [("run", "a"), ("run", "b"), ("run", "b"), ("run", "c")]
    assert world.store.describe(job_id)["status"] == "succeeded"
    assert ("step.resumed", "b") in world.events(job_id)


def test_heartbeat_and_a_runner_deciding_the_job_do_not_deadlock(
    world: World, lab: Lab, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a worker running a long step, its heartbeat renewing the lease every 0.1 s,
    # and a way to see a statement of the heartbeat's in the store, waiting for an answer
    settings = Settings(home=tmp_path / "beat", lease_seconds=0.3)
    job_id = world.submit("gated")
    other = JobStore(world.store.url)
    caplog.set_level(logging.WARNING, logger="prodinf.engine")
    beat_waiting = threading.Event()

    def sent(*_: Any) -> None:
        if threading.current_thread().name == "prodinf-heartbeat":
            beat_waiting.set()

    def answered(*_: Any) -> None:
        if threading.current_thread().name == "prodinf-heartbeat":
            beat_waiting.clear()

    event.listen(world.store.engine, "before_cursor_execute", sent)
    event.listen(world.store.engine, "after_cursor_execute", answered)
    error: BaseException | None = None
    renewed_before: datetime | None = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(world.new_runner(settings).drive, job_id)
        try:
            wait_until(lambda: lab.count(job_id, "run", "hold"), 10, "the long step to start")

            # When another worker decides the job's next step meanwhile, locking as
            # Runner._advance does: the job row, then (once a renewal of the heartbeat's
            # waits for that row) its steps. A renewal locks the job row first, so one
            # waiting for an answer while this transaction holds the row waits for it.
            try:
                with other.session() as session:
                    session.execute(select(JobRow.id).where(JobRow.id == job_id).with_for_update())
                    renewed_before = session.scalar(
                        select(StepRow.lease_until).where(
                            StepRow.job_id == job_id, StepRow.name == "hold"
                        )
                    )
                    assert beat_waiting.wait(10), "no renewal came while the job row was held"
                    session.execute(
                        select(StepRow.id).where(StepRow.job_id == job_id).with_for_update()
                    ).all()
            except Exception as exc:
                error = exc

            # Then the renewal that waited for the lock lands once it is free
            def renewed() -> bool:
                until = world.lease_until(job_id, "hold")
                return until is not None and renewed_before is not None and until > renewed_before

            wait_until(renewed, 10, "the heartbeat's renewal after the lock")
        finally:
            event.remove(world.store.engine, "before_cursor_execute", sent)
            event.remove(world.store.engine, "after_cursor_execute", answered)
            lab.gate.set()
            running.result(timeout=30)
            other.dispose()

    # And neither side was chosen as a deadlock victim
    beats_failed = [r.getMessage() for r in caplog.records if "heartbeat" in r.getMessage()]
    assert error is None, f"the runner's transaction failed: {error}"
    assert beats_failed == []
    # and the job finished, its long step run once
    assert world.store.describe(job_id)["status"] == "succeeded"
    assert lab.count(job_id, "run", "hold") == 1


def queued_past_redrive(world: World, tmp_path: Path, *kinds: str) -> list[str]:
    """Jobs of ``kinds``, submitted with a 0.05 s redrive_after that the clock has passed."""
    quick = Settings(home=tmp_path / "quick", redrive_after=0.05)
    ids = [world.new_jobs(quick).submit(kind, {})[0]["id"] for kind in kinds]
    with world.store.session() as session:
        due = session.scalar(select(func.max(JobRow.next_run_at)).where(JobRow.id.in_(ids)))
    assert due is not None
    wait_until(lambda: utcnow() > due, 10, "the clock to pass redrive_after", 0.02)
    return ids


def test_concurrent_reconcilers_publish_each_due_job_once(world: World, tmp_path: Path) -> None:
    # Given twelve jobs whose messages may have been lost (queued past redrive_after)
    ids = queued_past_redrive(world, tmp_path, *["plain"] * 12, "fanout")
    world.published.clear()

    # When two reconcilers run at the same instant
    counts = at_once(
        2, lambda i: reconcile(world.store, world.publish, resend_after=10.0, redrive_after=60.0)
    )

    # Then each due job was published exactly once, to its own queue
    assert sum(counts) == 13
    assert sorted(world.published) == sorted(
        [(job_id, "jobs") for job_id in ids[:-1]] + [(ids[-1], "handover")]
    )
    # and none is due again until redrive_after has passed
    assert reconcile(world.store, world.publish, resend_after=10.0, redrive_after=60.0) == 0


def test_reconciler_publishes_only_the_queues_asked_for(world: World, tmp_path: Path) -> None:
    # Given a due job on the jobs queue and one on the handover queue
    plain, fanout = queued_past_redrive(world, tmp_path, "plain", "fanout")
    world.published.clear()

    # When a reconciler runs for the handover queue, then it publishes that job only
    assert (
        reconcile(
            world.store, world.publish, resend_after=10.0, redrive_after=60.0, queues=["handover"]
        )
        == 1
    )
    assert world.published == [(fanout, "handover")]

    # And when one runs for every queue, then it publishes the other
    assert reconcile(world.store, world.publish, resend_after=10.0, redrive_after=60.0) == 1
    assert world.published[-1] == (plain, "jobs")


def test_reconciler_ignores_finished_jobs(world: World) -> None:
    # Given a job that succeeded, with a stale next_run_at left behind in the past
    job_id = world.submit("plain")
    world.runner.drive(job_id)
    with world.store.session() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(next_run_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    world.published.clear()

    # When the reconciler runs, then it publishes nothing
    assert reconcile(world.store, world.publish, resend_after=10.0, redrive_after=60.0) == 0
    assert world.published == []
