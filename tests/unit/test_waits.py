"""A step that waits gives its worker back until due, and says what it waits for.

Time is passed honestly but quickly: a waiting step is made due by moving its
``due_at`` (and the job's ``next_run_at``) into the past, which is exactly what
the clock would have done; one test lets the real clock do it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prodinf import Step, Wait
from prodinf.engine.context import StepContext
from prodinf.store.types import utcnow
from tests.unit.workers import when
from tests.waiting import wait_until
from tests.world import World

# -- waiting -----------------------------------------------------------------------------


def test_a_step_that_waits_gives_its_worker_back_until_due(world: World) -> None:
    # Given a step that finds the remote job running twice, then finished
    polls: list[int] = []

    def poll(ctx: StepContext) -> Any:
        n = int(ctx.state.get("polls", 0)) + 1
        polls.append(n)
        if n < 3:
            return ctx.wait(60, "remote job 42 is running", polls=n)
        return {"remote": 42, "polls": n}

    world.linear("poller", Step("poll", poll), Step("after", lambda ctx: "done"))
    job_id = world.submit("poller")

    # When driven the first time
    before = utcnow()
    job = world.drive(job_id)

    # Then the job waits, with the next look due a minute later, and shows why
    assert job["status"] == "waiting"
    assert (
        before + timedelta(seconds=59)
        < when(job["next_run_at"])
        <= utcnow() + timedelta(seconds=60)
    )
    poll_step = job["steps"][0]
    assert poll_step["status"] == "waiting"
    assert poll_step["waiting_for"] == "remote job 42 is running"
    assert when(poll_step["due_at"]) == when(job["next_run_at"])
    assert job["progress"]["message"] == "remote job 42 is running"

    # And driving before it is due does not run the step
    assert world.drive(job_id)["status"] == "waiting"
    assert polls == [1]

    # When time passes, twice
    world.pass_time(job_id)
    assert world.drive(job_id)["status"] == "waiting"
    world.pass_time(job_id)
    job = world.drive(job_id)

    # Then it finished; the step kept its state between runs
    assert polls == [1, 2, 3]
    assert job["status"] == "succeeded"
    assert job["steps"][0]["output"] == {"remote": 42, "polls": 3}
    assert job["steps"][0]["waiting_for"] is None
    # history says "waiting" once for the one reason, not once per look
    assert world.events(job_id, "step.started", "step.waiting", "step.succeeded") == [
        ("step.started", "poll"),
        ("step.waiting", "poll"),
        ("step.succeeded", "poll"),
        ("step.started", "after"),
        ("step.succeeded", "after"),
    ]


def test_history_records_each_distinct_wait_reason(world: World) -> None:
    # Given a step that finds the remote job queued, running three times, then complete
    answers = iter(["queued", "running", "running", "running", "complete"])

    def poll(ctx: StepContext) -> Any:
        status = next(answers)
        return status if status == "complete" else Wait(60, f"remote job is {status}")

    world.linear("poller", Step("poll", poll))
    job_id = world.submit("poller")

    # When it is driven, and time passes, until it ends
    job = world.drive(job_id)
    while job["status"] == "waiting":
        world.pass_time(job_id)
        job = world.drive(job_id)

    # Then history has one "waiting" entry per distinct reason, not one per look
    assert job["result"] == "complete"
    assert world.messages(job_id, "step.waiting") == [
        "remote job is queued",
        "remote job is running",
    ]


def test_a_short_wait_comes_due_on_the_real_clock(world: World) -> None:
    # The same as pass_time, with the real clock: a 0.5 s wait is due 0.5 s later.
    def nap(ctx: StepContext) -> Any:
        return "up" if ctx.state.get("slept") else ctx.wait(0.5, "napping", slept=True)

    # Given a step that naps half a second
    world.linear("nap", Step("nap", nap))
    job_id = world.submit("nap")
    job = world.drive(job_id)
    assert job["status"] == "waiting"
    due = when(job["next_run_at"])

    # When the clock has passed its due time
    wait_until(lambda: utcnow() > due, 10, "the clock to pass the nap's due time", 0.02)

    # Then a worker driving it runs the step again, and it ends
    assert world.drive(job_id)["result"] == "up"
