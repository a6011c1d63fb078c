"""``ctx.once``: a side effect is recorded, so a step run again does not repeat it."""

from __future__ import annotations

from typing import Any

from prodinf import Retry, Step
from prodinf.engine.context import StepContext
from prodinf.exceptions import TransientError
from tests.world import World

# -- ctx.once: side effects recorded ----------------------------------------------------


def test_once_runs_a_side_effect_once_across_re_executions(world: World) -> None:
    # Given a step that sends a mail, then waits for a reply
    sent: list[str] = []

    def send() -> str:
        sent.append("mail")
        return f"msg-{len(sent)}"

    def notify(ctx: StepContext) -> Any:
        message_id = ctx.once("mail", send)
        if not ctx.state.get("waited"):
            return ctx.wait(60, "waiting for the reply", waited=True)
        return {"message_id": message_id}

    world.linear("notify", Step("notify", notify))
    job_id = world.submit("notify")

    # When the step runs twice (before and after its wait)
    assert world.drive(job_id)["status"] == "waiting"
    world.pass_time(job_id)
    job = world.drive(job_id)

    # Then the mail went once, and the second run got the recorded id
    assert sent == ["mail"]
    assert job["result"] == {"message_id": "msg-1"}


def test_once_survives_a_failure_after_the_effect(world: World) -> None:
    # Given a step that submits a remote job once, then fails its first poll
    submitted: list[int] = []

    def submit_remote_job() -> int:
        submitted.append(1)
        return 1234

    def submit_then_poll(ctx: StepContext) -> Any:
        remote_id = ctx.once("submit", submit_remote_job)
        if ctx.attempt == 1:
            raise TransientError("poll timed out")
        return {"remote_id": remote_id}

    world.linear("remote", Step("run", submit_then_poll, retry=Retry(backoff=60)))
    job_id = world.submit("remote")
    assert world.drive(job_id)["status"] == "waiting"
    world.pass_time(job_id)

    # When its retry runs
    job = world.drive(job_id)

    # Then the remote job was submitted once, and the retry got its id
    assert submitted == [1]
    assert job["result"] == {"remote_id": 1234}


def test_record_commits_at_once_and_a_rerun_finds_it(world: World) -> None:
    # Given a step that records a delivery inside its side effect, then fails
    deliveries: list[str] = []

    def mail(ctx: StepContext) -> Any:
        if ctx.recorded("delivered") is None:
            deliveries.append("mail")
            ctx.record("delivered", "<msg-1@prodinf>")
        if ctx.attempt == 1:
            raise TransientError("the server hung up after accepting")
        return ctx.recorded("delivered")

    world.linear("mail", Step("mail", mail, retry=Retry(attempts=2, backoff=0.01)))
    job_id = world.submit("mail")

    # When the step runs, fails after the record, and runs again
    assert world.drive(job_id)["status"] == "waiting"
    world.pass_time(job_id)
    job = world.drive(job_id)

    # Then the mail went once and the second run found the record
    assert deliveries == ["mail"]
    assert job["result"] == "<msg-1@prodinf>"
