"""Leases: a step is held under a lease its worker's heartbeat renews; when the worker
dies the lease runs out and another worker resumes the step, and what the dead
worker does later is dropped.
"""

from __future__ import annotations

from datetime import timedelta

from prodinf import Step
from prodinf.engine.context import StepContext
from prodinf.store.types import utcnow
from tests.unit.workers import Background, Gate, count, counter, expire_lease, long_lease, when
from tests.waiting import wait_until
from tests.world import World

# -- leases: a worker that dies ----------------------------------------------------------


def test_a_live_lease_keeps_a_second_worker_off_the_step(world: World) -> None:
    # Given a worker with a short lease (1.2 s, renewed every 0.4 s) inside a step that
    # takes longer than it
    gate = Gate()
    calls = counter()

    def long(ctx: StepContext) -> int:
        if count(calls, "long") == 1:
            gate.hold()
        return calls["long"]

    world.linear("long", Step("long", long))
    job_id = world.submit("long")
    short = world.settings.model_copy(update={"lease_seconds": 1.2})
    first = Background(world.new_runner(short), job_id)
    assert gate.entered.wait(5)
    taken = world.lease_until(job_id, "long")
    assert taken is not None

    # When the lease as first taken has run out, the heartbeat has renewed it (with more
    # than half a lease to go), and a second worker gets a message for the job
    def renewed() -> bool:
        now, until = utcnow(), world.lease_until(job_id, "long")
        return now > taken and until is not None and until > now + timedelta(seconds=0.6)

    wait_until(renewed, 10, "the heartbeat to carry the lease past its first end")
    job = world.drive(job_id, world.new_runner(short))

    # Then the heartbeat kept the lease alive: the step is not run twice
    assert calls == {"long": 1}
    assert job["status"] == "running" and job["steps"][0]["status"] == "running"
    assert when(job["next_run_at"]) > utcnow()
    assert "step.resumed" not in [e for e, _ in world.events(job_id)]

    gate.released.set()
    first.join()
    job = world.describe(job_id)
    assert job["status"] == "succeeded" and job["result"] == 1


def test_an_expired_lease_lets_another_worker_resume_and_the_late_outcome_is_dropped(
    world: World,
) -> None:
    # Given a worker inside a step, which then stops renewing its lease
    gate = Gate()
    calls = counter()

    def work(ctx: StepContext) -> str:
        n = count(calls, "work")
        if n == 1:
            gate.hold()
        return f"run {n}"

    world.linear("work", Step("work", work), Step("after", lambda ctx: ctx.outputs["work"]))
    job_id = world.submit("work")
    stalled = Background(world.new_runner(long_lease(world.settings)), job_id)
    assert gate.entered.wait(5)
    expire_lease(world, job_id)

    # When another worker drives the job
    job = world.drive(job_id)

    # Then it resumed the step and finished the job
    assert job["status"] == "succeeded"
    assert job["result"] == "run 2"
    resumed = [h for h in job["history"] if h["event"] == "step.resumed"]
    assert [(h["step"], h["message"]) for h in resumed] == [
        ("work", "the worker holding work stopped answering; resuming")
    ]

    # And when the stalled worker comes back, its outcome is discarded
    gate.released.set()
    stalled.join()
    job = world.describe(job_id)
    assert job["status"] == "succeeded" and job["result"] == "run 2"
    assert job["steps"][0]["output"] == "run 2"
    assert world.events(job_id, "step.succeeded", "job.succeeded") == [
        ("step.succeeded", "work"),
        ("step.succeeded", "after"),
        ("job.succeeded", None),
    ]
    assert world.finished == [(job_id, "succeeded")]


def test_a_worker_that_lost_its_lease_cannot_change_what_the_job_shows(world: World) -> None:
    # Given a stalled worker whose step was taken over and finished by another worker
    gate = Gate()
    calls = counter()

    def copy(ctx: StepContext) -> str:
        n = count(calls, "copy")
        if n == 1:
            gate.hold()
            ctx.progress("copied 90% of core_db")  # it does not know it lost the lease
        return f"run {n}"

    world.linear("copy", Step("copy", copy))
    job_id = world.submit("copy")
    stalled = Background(world.new_runner(long_lease(world.settings)), job_id)
    assert gate.entered.wait(5)
    expire_lease(world, job_id)
    assert world.drive(job_id)["status"] == "succeeded"

    # When the stalled worker wakes up and reports progress
    gate.released.set()
    stalled.join()

    # Then the finished job still says it succeeded
    job = world.describe(job_id)
    assert job["progress"]["message"] == "succeeded"
