"""A step's retry policy: transient failures retried with backoff, permanent ones not,
and a deadline that ends both retrying and waiting.

Time passes by moving due times (and a step's first attempt) into the past.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from prodinf import Retry, Step
from prodinf.engine.context import StepContext
from prodinf.exceptions import PermanentError, TransientError
from prodinf.store import StepRow
from prodinf.store.types import utcnow
from tests.unit.workers import count, counter, when
from tests.world import World

# -- retries -----------------------------------------------------------------------------


def test_a_transient_failure_is_retried_with_backoff_then_succeeds(world: World) -> None:
    # Given a step that fails twice before it works, with a 10 s backoff and no jitter
    attempts: list[int] = []

    def flaky(ctx: StepContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise TransientError(f"service busy (try {ctx.attempt})")
        return "fetched"

    world.linear("flaky", Step("fetch", flaky, retry=Retry(attempts=3, backoff=10, jitter=0)))
    job_id = world.submit("flaky")

    # When it fails the first time
    before = utcnow()
    job = world.drive(job_id)
    after = utcnow()

    # Then it waits for the backoff and says why
    step = job["steps"][0]
    assert job["status"] == "waiting"
    assert step["status"] == "waiting" and step["attempts"] == 1
    assert before + timedelta(seconds=10) <= when(step["due_at"]) <= after + timedelta(seconds=10)
    assert step["waiting_for"].startswith("retry 2/3 in 10.0s after TransientError")
    assert step["error"]["message"] == "service busy (try 1)"

    # When the second try fails too, the backoff doubles
    world.pass_time(job_id)
    before = utcnow()
    step = world.drive(job_id)["steps"][0]
    assert when(step["due_at"]) >= before + timedelta(seconds=20)

    # And the third try works
    world.pass_time(job_id)
    job = world.drive(job_id)
    assert job["status"] == "succeeded" and job["result"] == "fetched"
    assert attempts == [1, 2, 3]
    assert job["steps"][0]["attempts"] == 2  # failed tries
    assert job["steps"][0]["error"] is None
    assert world.events(job_id, "step.started", "step.retrying") == [
        ("step.started", "fetch"),
        ("step.retrying", "fetch"),
        ("step.retrying", "fetch"),
    ]
    retrying = next(h for h in job["history"] if h["event"] == "step.retrying")
    assert "TransientError: service busy (try 1)" in retrying["data"]["traceback"]


def test_any_exception_is_transient_and_retried_until_attempts_run_out(world: World) -> None:
    # Given a step that always raises an exception prodinf does not know, 3 attempts
    calls = counter()

    def broken(ctx: StepContext) -> None:
        count(calls, "broken")
        raise RuntimeError("connection reset")

    world.linear("broken", Step("call", broken, retry=Retry(attempts=3, backoff=0.01)))
    job_id = world.submit("broken")

    # When it is driven, and time passes, until it stops waiting
    job = world.drive(job_id)
    while job["status"] == "waiting":
        world.pass_time(job_id)
        job = world.drive(job_id)

    # Then it was tried three times and the job failed, saying so
    assert calls == {"broken": 3}
    assert job["status"] == "failed"
    assert job["error"] == {
        "type": "RuntimeError",
        "message": "connection reset",
        "step": "call",
        "attempt": 3,
        "transient": True,
    }
    assert job["steps"][0]["status"] == "failed"
    assert [e for e, _ in world.events(job_id) if e.startswith(("step.r", "step.f", "job.f"))] == [
        "step.retrying",
        "step.retrying",
        "step.failed",
        "job.failed",
    ]
    assert job["progress"]["message"] == "failed: connection reset"


def test_a_permanent_error_fails_at_once_without_retry(world: World) -> None:
    # Given a step that fails for good, with five attempts allowed
    calls = counter()

    def refuse(ctx: StepContext) -> None:
        count(calls, "refuse")
        raise PermanentError("database name is not allowed")

    world.linear(
        "strict", Step("check", refuse, retry=Retry(attempts=5)), Step("next", lambda ctx: 1)
    )

    # When it is driven
    job = world.drive(world.submit("strict"))

    # Then it ran once, and the job failed without a retry
    assert calls == {"refuse": 1}
    assert job["status"] == "failed"
    assert job["error"]["type"] == "PermanentError"
    assert job["error"]["message"] == "database name is not allowed"
    assert job["error"]["transient"] is False
    assert [s["status"] for s in job["steps"]] == ["failed", "pending"]
    assert "step.retrying" not in [e for e, _ in world.events(job["id"])]


def test_a_transient_error_may_say_when_to_try_again(world: World) -> None:
    # Given a step whose error asks to be tried again in two minutes (backoff: 1 s)
    def throttled(ctx: StepContext) -> None:
        raise TransientError("429 from the archive", retry_after=120)

    world.linear("throttled", Step("call", throttled, retry=Retry(backoff=1)))

    # When it fails
    before = utcnow()
    step = world.drive(world.submit("throttled"))["steps"][0]

    # Then its next try is no sooner than the error asked
    assert when(step["due_at"]) >= before + timedelta(seconds=120)


def move_first_attempt_back(world: World, job_id: str, seconds: float) -> None:
    """As if the step had first run ``seconds`` ago (its deadline counts from then)."""
    with world.store.session() as session:
        session.execute(
            update(StepRow)
            .where(StepRow.job_id == job_id)
            .values(first_attempt_at=utcnow() - timedelta(seconds=seconds))
        )


def test_a_step_that_waits_past_its_deadline_fails(world: World) -> None:
    world.linear(
        "stuck",
        Step(
            "wait", lambda ctx: ctx.wait(60, "remote job 7 is running"), retry=Retry(deadline=300)
        ),
    )
    job_id = world.submit("stuck")
    assert world.drive(job_id)["status"] == "waiting"

    # When it has been waiting for longer than its deadline
    move_first_attempt_back(world, job_id, 301)
    world.pass_time(job_id)
    job = world.drive(job_id)

    # Then it fails, saying what it waited for
    assert job["status"] == "failed"
    assert job["error"]["type"] == "PermanentError"
    assert job["error"]["message"] == "wait gave up after 300s waiting: remote job 7 is running"


def test_a_transient_failure_past_the_deadline_is_not_retried(world: World) -> None:
    # Given a step that keeps failing, with ten attempts but a 60 s deadline
    calls = counter()

    def busy(ctx: StepContext) -> None:
        count(calls, "busy")
        raise TransientError("still busy")

    world.linear("late", Step("call", busy, retry=Retry(attempts=10, backoff=1, deadline=60)))
    job_id = world.submit("late")
    assert world.drive(job_id)["status"] == "waiting"

    # When it fails again after its deadline has passed
    move_first_attempt_back(world, job_id, 61)
    world.pass_time(job_id)
    job = world.drive(job_id)

    # Then it is not retried: the job failed after two tries
    assert calls == {"busy": 2}
    assert job["status"] == "failed"
    assert job["steps"][0]["attempts"] == 2
