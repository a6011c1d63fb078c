"""The engine end to end on a real SQLite store: runner, service (submit, cancel, retry).

Nothing here mocks the engine or the store. Each test registers small kinds in
a fresh ``Registry``, submits through ``Jobs``, and drives with ``Runner.drive``
as a worker's task would. ``publish`` records (job id, queue): it is the
boundary to the broker, whose real path the integration tier covers.

Time is passed honestly but quickly: a waiting or retrying step is made due by
moving its ``due_at`` (and the job's ``next_run_at``) into the past, which is
exactly what the clock would have done.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import update

from prodinf import Retry, Step, Wait
from prodinf.config import Settings
from prodinf.engine.context import StepContext
from prodinf.engine.registry import Registry
from prodinf.engine.runner import Runner
from prodinf.engine.service import Jobs
from prodinf.exceptions import (
    BrokerUnavailable,
    Conflict,
    NotFound,
    PermanentError,
    TransientError,
    UnknownKind,
    ValidationError,
)
from prodinf.store import JobRow, StepRow
from prodinf.store.types import utcnow
from tests.unit.world import World

SECRET_URL = "postgresql://u:secret@h/db"
MASKED_URL = "postgresql://u:***@h/db"


class Gate:
    """Holds a step inside ``execute`` until the test releases it: a long step on a worker."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()

    def hold(self) -> None:
        self.entered.set()
        assert self.released.wait(10), "the test never released the gate"


class Background:
    """``runner.drive(job_id)`` in a thread, as another worker process would run it."""

    def __init__(self, runner: Runner, job_id: str) -> None:
        self.error: BaseException | None = None

        def run() -> None:
            try:
                runner.drive(job_id)
            except BaseException as exc:  # re-raised in the test's thread by join()
                self.error = exc

        self.thread = threading.Thread(target=run, name="other-worker", daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive(), "the background drive did not return"
        if self.error is not None:
            raise self.error


def when(dt: str | None) -> datetime:
    assert dt is not None
    return datetime.fromisoformat(dt)


def counter() -> dict[str, int]:
    return {}


def count(calls: dict[str, int], name: str) -> int:
    calls[name] = calls.get(name, 0) + 1
    return calls[name]


# -- a linear flow -----------------------------------------------------------------------


def test_linear_flow_succeeds_with_the_last_steps_output_as_result(world: World) -> None:
    # Given a kind of three steps, each reading the output before it
    world.linear(
        "build",
        Step("fetch", lambda ctx: {"rows": 3}),
        Step("double", lambda ctx: {"rows": ctx.outputs["fetch"]["rows"] * 2}),
        Step("report", lambda ctx: f"{ctx.outputs['double']['rows']} rows"),
    )
    job_id = world.submit("build")
    assert world.published == [(job_id, "jobs")]

    # When a worker drives it
    job = world.drive(job_id)

    # Then it succeeded, its result is the last output, and every step shows it
    assert job["status"] == "succeeded"
    assert job["result"] == "6 rows"
    assert job["error"] is None
    assert job["progress"] == {"done": 3, "total": 3, "message": "succeeded"}
    assert [(s["name"], s["status"], s["output"]) for s in job["steps"]] == [
        ("fetch", "succeeded", {"rows": 3}),
        ("double", "succeeded", {"rows": 6}),
        ("report", "succeeded", "6 rows"),
    ]
    assert job["finished_at"] is not None and job["next_run_at"] is None
    assert world.events(job_id) == [
        ("job.submitted", None),
        ("step.started", "fetch"),
        ("step.succeeded", "fetch"),
        ("step.started", "double"),
        ("step.succeeded", "double"),
        ("step.started", "report"),
        ("step.succeeded", "report"),
        ("job.succeeded", None),
    ]
    # a linear flow never fans out, and the worker is told the job ended
    assert world.published == [(job_id, "jobs")]
    assert world.finished == [(job_id, "succeeded")]


def test_params_reach_steps_validated(world: World) -> None:
    class Greeting(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str
        times: int = Field(default=1, ge=1)

    def say(ctx: StepContext) -> str:
        params = cast(Greeting, ctx.params)
        return " ".join([f"hi {params.name}"] * params.times)

    world.linear("greet", Step("say", say), params=Greeting)

    job = world.drive(world.submit("greet", {"name": "ada", "times": 2}))

    assert job["params"] == {"name": "ada", "times": 2}
    assert job["result"] == "hi ada hi ada"


def test_driving_a_finished_or_unknown_job_does_nothing(world: World) -> None:
    calls = counter()
    world.linear("once", Step("a", lambda ctx: count(calls, "a")))
    job_id = world.submit("once")
    world.drive(job_id)

    job = world.drive(job_id)
    world.runner.drive("no-such-job")

    assert job["status"] == "succeeded" and calls == {"a": 1}


def test_a_job_whose_kind_is_gone_fails_naming_the_kind(world: World, settings: Settings) -> None:
    world.linear("retired", Step("a", lambda ctx: 1))
    job_id = world.submit("retired")

    # When the worker's registry no longer has the kind (a plugin was removed)
    other = Runner(world.store, Registry(), settings, world.publish)
    job = world.drive(job_id, other)

    assert job["status"] == "failed"
    assert job["error"]["type"] == "UnknownKind"
    assert "retired" in job["error"]["message"]


# -- a graph -----------------------------------------------------------------------------


def diamond(world: World, left: Callable[[StepContext], Any] | None = None) -> dict[str, str]:
    """Register ``diamond``: root, then left and right in parallel, then join. Who ran what."""
    ran_by: dict[str, str] = {}

    def work(name: str, value: Any) -> Callable[[StepContext], Any]:
        def execute(ctx: StepContext) -> Any:
            ran_by[name] = threading.current_thread().name
            return value

        return execute

    def join(ctx: StepContext) -> Any:
        ran_by["join"] = threading.current_thread().name
        return {"sum": ctx.outputs["left"] + ctx.outputs["right"], "seen": sorted(ctx.outputs)}

    world.linear(
        "diamond",
        Step("root", work("root", 1)),
        Step("left", left or work("left", 10), after=("root",)),
        Step("right", work("right", 100), after=("root",)),
        Step("join", join, after=("left", "right")),
    )
    return ran_by


def test_graph_fans_out_and_the_join_sees_both_branches(world: World) -> None:
    diamond(world)
    job_id = world.submit("diamond")

    job = world.drive(job_id)

    assert job["status"] == "succeeded"
    assert job["result"] == {"sum": 110, "seen": ["left", "right", "root"]}
    # submit published once; when two branches became ready, the runner published again
    # so a second worker could take one
    assert world.published == [(job_id, "jobs"), (job_id, "jobs")]
    assert [s["after"] for s in job["steps"]] == [[], ["root"], ["root"], ["left", "right"]]


def test_a_second_worker_takes_the_other_branch_while_the_first_is_busy(world: World) -> None:
    # Given a diamond whose left branch is long
    gate = Gate()

    def left(ctx: StepContext) -> int:
        ran_by["left"] = threading.current_thread().name
        gate.hold()
        return 10

    ran_by = diamond(world, left)
    job_id = world.submit("diamond")

    # When one worker is inside the left branch and a second worker gets the fan-out message
    first = Background(world.new_runner(), job_id)
    assert gate.entered.wait(5)
    assert world.published[-1] == (job_id, "jobs")
    job = world.drive(job_id)

    # Then the second worker ran the right branch and left the join for later
    assert ran_by["right"] == threading.current_thread().name
    statuses = {s["name"]: s["status"] for s in job["steps"]}
    assert statuses == {
        "root": "succeeded",
        "left": "running",
        "right": "succeeded",
        "join": "pending",
    }
    assert job["status"] == "running"

    # And when the left branch ends, its worker runs the join
    gate.released.set()
    first.join()
    job = world.describe(job_id)
    assert job["status"] == "succeeded"
    assert ran_by["left"] == ran_by["join"] == "other-worker"
    assert job["result"] == {"sum": 110, "seen": ["left", "right", "root"]}


def test_a_flow_with_two_sinks_has_a_dict_of_their_outputs_as_result(world: World) -> None:
    world.linear(
        "two-sinks",
        Step("root", lambda ctx: 2),
        Step("square", lambda ctx: ctx.outputs["root"] ** 2, after=("root",)),
        Step("cube", lambda ctx: ctx.outputs["root"] ** 3, after=("root",)),
    )

    job = world.drive(world.submit("two-sinks"))

    assert job["status"] == "succeeded"
    assert job["result"] == {"square": 4, "cube": 8}


def test_a_kind_can_shape_its_result_from_all_outputs(world: World) -> None:
    world.linear(
        "shaped",
        Step("a", lambda ctx: 1),
        Step("b", lambda ctx: 2),
        result=lambda outputs: {"total": outputs["a"] + outputs["b"]},
    )

    job = world.drive(world.submit("shaped"))

    assert job["result"] == {"total": 3}


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
    answers = iter(["queued", "running", "running", "running", "complete"])

    def poll(ctx: StepContext) -> Any:
        status = next(answers)
        return status if status == "complete" else Wait(60, f"remote job is {status}")

    world.linear("poller", Step("poll", poll))
    job_id = world.submit("poller")

    job = world.drive(job_id)
    while job["status"] == "waiting":
        world.pass_time(job_id)
        job = world.drive(job_id)

    assert job["result"] == "complete"
    assert world.messages(job_id, "step.waiting") == [
        "remote job is queued",
        "remote job is running",
    ]


def test_a_short_wait_comes_due_on_the_real_clock(world: World) -> None:
    # The same as pass_time, with the real clock: a 0.5 s wait is due 0.5 s later.
    def nap(ctx: StepContext) -> Any:
        return "up" if ctx.state.get("slept") else ctx.wait(0.5, "napping", slept=True)

    world.linear("nap", Step("nap", nap))
    job_id = world.submit("nap")
    job = world.drive(job_id)
    assert job["status"] == "waiting"

    time.sleep(max(0.0, (when(job["next_run_at"]) - utcnow()).total_seconds()) + 0.05)
    assert world.drive(job_id)["result"] == "up"


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
    calls = counter()

    def broken(ctx: StepContext) -> None:
        count(calls, "broken")
        raise RuntimeError("connection reset")

    world.linear("broken", Step("call", broken, retry=Retry(attempts=3, backoff=0.01)))
    job_id = world.submit("broken")

    job = world.drive(job_id)
    while job["status"] == "waiting":
        world.pass_time(job_id)
        job = world.drive(job_id)

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
    calls = counter()

    def refuse(ctx: StepContext) -> None:
        count(calls, "refuse")
        raise PermanentError("database name is not allowed")

    world.linear(
        "strict", Step("check", refuse, retry=Retry(attempts=5)), Step("next", lambda ctx: 1)
    )

    job = world.drive(world.submit("strict"))

    assert calls == {"refuse": 1}
    assert job["status"] == "failed"
    assert job["error"]["type"] == "PermanentError"
    assert job["error"]["message"] == "database name is not allowed"
    assert job["error"]["transient"] is False
    assert [s["status"] for s in job["steps"]] == ["failed", "pending"]
    assert "step.retrying" not in [e for e, _ in world.events(job["id"])]


def test_a_transient_error_may_say_when_to_try_again(world: World) -> None:
    def throttled(ctx: StepContext) -> None:
        raise TransientError("429 from the archive", retry_after=120)

    world.linear("throttled", Step("call", throttled, retry=Retry(backoff=1)))

    before = utcnow()
    step = world.drive(world.submit("throttled"))["steps"][0]

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
    calls = counter()

    def busy(ctx: StepContext) -> None:
        count(calls, "busy")
        raise TransientError("still busy")

    world.linear("late", Step("call", busy, retry=Retry(attempts=10, backoff=1, deadline=60)))
    job_id = world.submit("late")
    assert world.drive(job_id)["status"] == "waiting"

    move_first_attempt_back(world, job_id, 61)
    world.pass_time(job_id)
    job = world.drive(job_id)

    assert calls == {"busy": 2}
    assert job["status"] == "failed"
    assert job["steps"][0]["attempts"] == 2


# -- reverting ---------------------------------------------------------------------------


def undoable(name: str, done: list[str], undone: list[tuple[str, Any]]) -> Step:
    def execute(ctx: StepContext) -> dict[str, str]:
        done.append(name)
        return {"made": name}

    def revert(ctx: StepContext) -> None:
        undone.append((name, ctx.output))

    return Step(name, execute, revert=revert)


def fail_for_good(ctx: StepContext) -> None:
    raise PermanentError("disk full on staging")


def test_a_permanent_failure_reverts_earlier_steps_latest_first(world: World) -> None:
    # Given three steps that can be undone, and a fourth that fails for good
    done: list[str] = []
    undone: list[tuple[str, Any]] = []
    world.linear(
        "handover",
        undoable("copy", done, undone),
        undoable("register", done, undone),
        undoable("announce", done, undone),
        Step("check", fail_for_good),
    )
    job_id = world.submit("handover")

    # When driven
    job = world.drive(job_id)

    # Then every earlier step was undone, latest first, each seeing its own output
    assert done == ["copy", "register", "announce"]
    assert undone == [
        ("announce", {"made": "announce"}),
        ("register", {"made": "register"}),
        ("copy", {"made": "copy"}),
    ]
    assert job["status"] == "reverted"
    assert {k: job["error"][k] for k in ("type", "message", "step")} == {
        "type": "PermanentError",
        "message": "disk full on staging",
        "step": "check",
    }
    assert [s["status"] for s in job["steps"]] == ["reverted", "reverted", "reverted", "failed"]
    assert world.events(job_id, "step.reverting", "step.reverted", "job.reverted") == [
        ("step.reverting", "announce"),
        ("step.reverted", "announce"),
        ("step.reverting", "register"),
        ("step.reverted", "register"),
        ("step.reverting", "copy"),
        ("step.reverted", "copy"),
        ("job.reverted", None),
    ]
    assert job["progress"]["message"] == "reverted: disk full on staging"
    assert world.finished == [(job_id, "reverted")]


def test_only_steps_with_a_revert_are_undone(world: World) -> None:
    done: list[str] = []
    undone: list[tuple[str, Any]] = []
    world.linear(
        "mixed",
        undoable("copy", done, undone),
        Step("log", lambda ctx: "logged"),
        Step("check", fail_for_good),
    )

    job = world.drive(world.submit("mixed"))

    assert [name for name, _ in undone] == ["copy"]
    assert job["status"] == "reverted"
    assert [s["status"] for s in job["steps"]] == ["reverted", "succeeded", "failed"]


def test_a_revert_that_raises_leaves_the_step_revert_failed_and_the_job_failed(
    world: World,
) -> None:
    def cannot_undo(ctx: StepContext) -> None:
        raise RuntimeError(f"drop database on {SECRET_URL} refused")

    world.linear(
        "stuck-copy",
        Step("copy", lambda ctx: "copied", revert=cannot_undo),
        Step("check", fail_for_good),
    )
    job_id = world.submit("stuck-copy")

    job = world.drive(job_id)

    assert job["status"] == "failed"
    copy = job["steps"][0]
    assert copy["status"] == "revert_failed"
    assert copy["error"]["type"] == "RuntimeError"
    assert copy["error"]["message"] == f"drop database on {MASKED_URL} refused"
    # the job's error is still the failure that started it all
    assert job["error"]["step"] == "check"
    assert ("step.revert_failed", "copy") in world.events(job_id)
    assert "secret" not in json.dumps(job)


def test_a_failed_revert_means_the_job_is_failed_even_if_other_reverts_worked(
    world: World,
) -> None:
    # Given two undoable steps, the earlier of which cannot be undone
    undone: list[str] = []

    def cannot_undo(ctx: StepContext) -> None:
        raise RuntimeError("replica is read-only")

    world.linear(
        "half-undone",
        Step("copy", lambda ctx: "copied", revert=cannot_undo),
        Step("register", lambda ctx: "registered", revert=lambda ctx: undone.append("register")),
        Step("check", fail_for_good),
    )

    job = world.drive(world.submit("half-undone"))

    # Then the job must not claim it was reverted: "copy" is still in place
    assert undone == ["register"]
    assert [s["status"] for s in job["steps"]] == ["revert_failed", "reverted", "failed"]
    assert job["status"] == "failed"


def test_with_nothing_to_revert_a_permanent_failure_leaves_the_job_failed(world: World) -> None:
    world.linear("plain", Step("a", lambda ctx: 1), Step("b", fail_for_good))

    job = world.drive(world.submit("plain"))

    assert job["status"] == "failed"
    assert [s["status"] for s in job["steps"]] == ["succeeded", "failed"]
    assert "step.reverting" not in [e for e, _ in world.events(job["id"])]


def test_a_failed_job_leaves_no_step_waiting(world: World) -> None:
    # Given a graph in which one branch waits while the other fails for good
    world.linear(
        "split",
        Step("root", lambda ctx: 1),
        Step("slow", lambda ctx: ctx.wait(3600, "remote copy running"), after=("root",)),
        Step("bad", fail_for_good, after=("root",)),
    )

    job = world.drive(world.submit("split"))

    # Then the failed job does not go on showing a step waiting for something
    assert job["status"] == "failed"
    assert [s["status"] for s in job["steps"] if s["status"] in ("waiting", "running")] == []
    assert all(s["waiting_for"] is None for s in job["steps"])


# -- retry() -----------------------------------------------------------------------------


def test_retry_resumes_a_failed_job_without_rerunning_what_stays_done(world: World) -> None:
    # Given a job that failed because something outside was broken
    calls = counter()
    broken = {"schema": True}

    def load(ctx: StepContext) -> str:
        count(calls, "load")
        if broken["schema"]:
            raise PermanentError("schema 'core' is missing")
        return "loaded"

    def unstage(ctx: StepContext) -> None:
        count(calls, "unstage")

    world.linear(
        "pipeline",
        Step("fetch", lambda ctx: count(calls, "fetch")),
        Step("stage", lambda ctx: count(calls, "stage"), revert=unstage),
        Step("load", load),
    )
    job_id = world.submit("pipeline")
    assert world.drive(job_id)["status"] == "reverted"

    # When the cause is fixed and the job retried
    broken["schema"] = False
    summary = world.jobs.retry(job_id)

    # Then it is queued and published again
    assert summary["status"] == "queued"
    assert world.published[-1] == (job_id, "jobs")
    job = world.describe(job_id)
    assert job["error"] is None and job["result"] is None and job["finished_at"] is None
    assert [(s["name"], s["status"]) for s in job["steps"]] == [
        ("fetch", "succeeded"),
        ("stage", "pending"),
        ("load", "pending"),
    ]
    assert world.messages(job_id, "job.retried") == ["retrying stage, load"]

    # And it finishes, running the reverted and failed steps again but not "fetch"
    job = world.drive(job_id)
    assert job["status"] == "succeeded" and job["result"] == "loaded"
    assert calls == {"fetch": 1, "stage": 2, "unstage": 1, "load": 2}
    assert job["steps"][0]["output"] == 1  # fetch kept its output
    assert job["progress"]["done"] == job["progress"]["total"] == 3
    assert [e for e, _ in world.events(job_id) if e.startswith("job.")] == [
        "job.submitted",
        "job.reverted",
        "job.retried",
        "job.succeeded",
    ]


def test_retry_of_a_cancelled_job_runs_it(world: World) -> None:
    world.linear("todo", Step("a", lambda ctx: "a"), Step("b", lambda ctx: "b"))
    job_id = world.submit("todo")
    world.jobs.cancel(job_id)

    world.jobs.retry(job_id)
    job = world.drive(job_id)

    assert job["status"] == "succeeded" and job["result"] == "b"
    assert job["cancel_requested"] is False


def test_after_retry_no_step_runs_before_the_steps_it_depends_on_are_redone(
    world: World,
) -> None:
    # Given copy (undoable) -> announce (no revert) -> register (fails until fixed):
    # "register" needs the copy that the failure undid.
    broken = {"yes": True}
    copy_gate = Gate()
    copies = counter()
    seen_by_register: list[int] = []

    def copy(ctx: StepContext) -> str:
        if count(copies, "copy") == 2:
            copy_gate.hold()  # the second copy takes a while
        return "copied"

    def uncopy(ctx: StepContext) -> None:
        count(copies, "uncopy")

    def register(ctx: StepContext) -> str:
        seen_by_register.append(copies.get("copy", 0) - copies.get("uncopy", 0))
        if broken["yes"]:
            raise PermanentError("registry down")
        return "registered"

    world.linear(
        "handover",
        Step("copy", copy, revert=uncopy),
        Step("announce", lambda ctx: "announced"),
        Step("register", register),
    )
    job_id = world.submit("handover")
    assert world.drive(job_id)["status"] == "reverted"

    # When it is retried, and one worker is busy re-copying while another gets a message
    broken["yes"] = False
    world.jobs.retry(job_id)
    first = Background(world.new_runner(), job_id)
    assert copy_gate.entered.wait(5)
    try:
        world.drive(job_id)

        # Then "register" did not run against a copy that is not there
        assert world.step(job_id, "register")["status"] == "pending"
        assert seen_by_register == [1]
    finally:
        copy_gate.released.set()
        first.join()
    job = world.describe(job_id)
    assert job["status"] == "succeeded"
    assert seen_by_register[-1] == 1


def test_retry_of_an_active_or_succeeded_job_is_a_conflict(world: World) -> None:
    world.linear("ok", Step("a", lambda ctx: ctx.wait(60, "later") if not ctx.state else 1))
    queued = world.submit("ok")
    waiting = world.submit("ok")
    world.drive(waiting)
    world.linear("fine", Step("a", lambda ctx: 1))
    succeeded = world.submit("fine")
    world.drive(succeeded)

    for job_id in (queued, waiting, succeeded):
        with pytest.raises(Conflict) as caught:
            world.jobs.retry(job_id)
        assert caught.value.field == "id"
    with pytest.raises(NotFound):
        world.jobs.retry("no-such-job")


def test_retry_of_a_running_job_is_a_conflict(world: World) -> None:
    gate = Gate()
    world.linear("long", Step("work", lambda ctx: gate.hold()))
    job_id = world.submit("long")
    other = Background(world.new_runner(), job_id)
    assert gate.entered.wait(5)
    try:
        with pytest.raises(Conflict, match="is running"):
            world.jobs.retry(job_id)
    finally:
        gate.released.set()
        other.join()


# -- cancel() ----------------------------------------------------------------------------


def test_cancelling_a_queued_job_cancels_it_at_once(world: World) -> None:
    calls = counter()
    world.linear("todo", Step("a", lambda ctx: count(calls, "a")), Step("b", lambda ctx: 2))
    job_id = world.submit("todo")

    summary = world.jobs.cancel(job_id)

    assert summary["status"] == "cancelled"
    job = world.describe(job_id)
    assert [s["status"] for s in job["steps"]] == ["cancelled", "cancelled"]
    assert job["finished_at"] is not None
    assert world.events(job_id) == [("job.submitted", None), ("job.cancelled", None)]
    # and the message still in the broker finds nothing to do
    assert world.drive(job_id)["status"] == "cancelled"
    assert calls == {}


def test_cancelling_a_waiting_job_cancels_it_at_once(world: World) -> None:
    calls = counter()

    def poll(ctx: StepContext) -> Any:
        count(calls, "poll")
        return ctx.wait(60, "remote job running")

    world.linear("poller", Step("poll", poll), Step("after", lambda ctx: 1))
    job_id = world.submit("poller")
    assert world.drive(job_id)["status"] == "waiting"

    assert world.jobs.cancel(job_id)["status"] == "cancelled"

    world.pass_time(job_id)
    job = world.drive(job_id)
    assert job["status"] == "cancelled"
    assert [s["status"] for s in job["steps"]] == ["cancelled", "cancelled"]
    assert job["steps"][0]["due_at"] is None and job["next_run_at"] is None
    assert calls == {"poll": 1}


def test_cancelling_a_running_job_stops_it_after_the_current_step(world: World) -> None:
    # Given a job whose first step is running on a worker
    gate = Gate()
    calls = counter()

    def long(ctx: StepContext) -> dict[str, bool]:
        gate.hold()
        return {"saw_cancel": ctx.cancel_requested()}

    world.linear("long", Step("long", long), Step("next", lambda ctx: count(calls, "next")))
    job_id = world.submit("long")
    worker = Background(world.new_runner(), job_id)
    assert gate.entered.wait(5)

    # When someone cancels it
    summary = world.jobs.cancel(job_id)

    # Then it is still running, marked to stop
    assert summary["status"] == "running"
    job = world.describe(job_id)
    assert job["cancel_requested"] is True
    assert world.messages(job_id, "job.cancel_requested") == [
        "cancel requested; stopping after long"
    ]

    # And when the step ends, the job is cancelled and the next step never runs
    gate.released.set()
    worker.join()
    job = world.describe(job_id)
    assert job["status"] == "cancelled"
    assert [(s["name"], s["status"]) for s in job["steps"]] == [
        ("long", "succeeded"),
        ("next", "cancelled"),
    ]
    assert job["steps"][0]["output"] == {"saw_cancel": True}
    assert calls == {}
    assert world.finished == [(job_id, "cancelled")]


def test_cancelling_a_finished_job_is_a_conflict(world: World) -> None:
    world.linear("fine", Step("a", lambda ctx: 1))
    job_id = world.submit("fine")
    world.drive(job_id)

    with pytest.raises(Conflict) as caught:
        world.jobs.cancel(job_id)
    assert caught.value.field == "id"
    with pytest.raises(Conflict):
        world.jobs.cancel(job_id)
    with pytest.raises(NotFound):
        world.jobs.cancel("no-such-job")


def test_cancelling_a_job_whose_worker_died_leaves_no_step_running(world: World) -> None:
    # Given a job whose worker died inside a step (its lease ran out)
    gate = Gate()
    world.linear("orphan", Step("work", lambda ctx: gate.hold()), Step("next", lambda ctx: 1))
    job_id = world.submit("orphan")
    dead = Background(world.new_runner(long_lease(world.settings)), job_id)
    assert gate.entered.wait(5)
    expire_lease(world, job_id)
    try:
        # When it is cancelled and the reconciler's message drives it
        world.jobs.cancel(job_id)
        job = world.drive(job_id)

        # Then it is cancelled and no step pretends to be running still
        assert job["status"] == "cancelled"
        assert [(s["name"], s["status"]) for s in job["steps"]] == [
            ("work", "cancelled"),
            ("next", "cancelled"),
        ]
    finally:
        gate.released.set()
        dead.join()
    # and should the dead worker come back after all, its outcome is not recorded
    assert world.describe(job_id)["steps"][0]["status"] == "cancelled"


def test_cancelling_a_job_while_it_reverts_does_not_stop_the_undoing(world: World) -> None:
    # Given a failed job whose latest step is being undone on a worker
    gate = Gate()
    undone: list[str] = []

    def slow_undo(ctx: StepContext) -> None:
        gate.hold()
        undone.append("register")

    world.linear(
        "handover",
        Step("copy", lambda ctx: "copied", revert=lambda ctx: undone.append("copy")),
        Step("register", lambda ctx: "registered", revert=slow_undo),
        Step("check", fail_for_good),
    )
    job_id = world.submit("handover")
    worker = Background(world.new_runner(), job_id)
    assert gate.entered.wait(5)

    # When someone cancels it (a cancel means "stop the work", not "leave it half undone")
    world.jobs.cancel(job_id)
    gate.released.set()
    worker.join()

    # Then every revert still ran
    assert undone == ["register", "copy"]
    job = world.describe(job_id)
    assert [s["status"] for s in job["steps"]] == ["reverted", "reverted", "failed"]
    assert job["status"] == "reverted"


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

    job = world.drive(job_id)

    assert submitted == [1]
    assert job["result"] == {"remote_id": 1234}


# -- leases: a worker that dies ----------------------------------------------------------


def long_lease(settings: Settings) -> Settings:
    """Settings with a 60 s lease: the heartbeat (every 20 s) will not tick during a test."""
    return settings.model_copy(update={"lease_seconds": 60.0})


def expire_lease(world: World, job_id: str) -> None:
    """What a dead worker leaves behind: its running step's lease in the past.

    The worker's thread is still blocked in the step, so we can later let it
    return "late"; it runs with a 60 s lease, so its heartbeat cannot renew the
    lease before the second runner looks (a frozen or partitioned worker).
    """
    past = utcnow() - timedelta(seconds=1)
    with world.store.session() as session:
        session.execute(
            update(StepRow)
            .where(StepRow.job_id == job_id, StepRow.status == "running")
            .values(lease_until=past)
        )
        session.execute(update(JobRow).where(JobRow.id == job_id).values(next_run_at=past))


def test_a_live_lease_keeps_a_second_worker_off_the_step(world: World) -> None:
    # Given a worker with a short lease (0.5 s) inside a step that takes longer than it
    gate = Gate()
    calls = counter()

    def long(ctx: StepContext) -> int:
        if count(calls, "long") == 1:
            gate.hold()
        return calls["long"]

    world.linear("long", Step("long", long))
    job_id = world.submit("long")
    short = world.settings.model_copy(update={"lease_seconds": 0.5})
    first = Background(world.new_runner(short), job_id)
    assert gate.entered.wait(5)

    # When a second worker gets a message for the job after twice the lease
    time.sleep(1.0)
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


# -- submit: idempotency and validation --------------------------------------------------


class Copy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    database: str = Field(min_length=1)
    copies: int = Field(default=1, ge=1)


def test_an_idempotency_key_returns_the_existing_job(world: World) -> None:
    world.linear("copy", Step("copy", lambda ctx: 1), params=Copy)
    first, created = world.jobs.submit("copy", {"database": "a"}, idempotency_key="copy-a-1")
    again, created_again = world.jobs.submit("copy", {"database": "a"}, idempotency_key="copy-a-1")

    assert created is True and created_again is False
    assert again["id"] == first["id"]
    assert world.store.list_jobs()[1] == 1
    assert world.published == [(first["id"], "jobs")]


def test_an_idempotency_key_used_for_another_kind_is_a_conflict(world: World) -> None:
    world.linear("copy", Step("copy", lambda ctx: 1), params=Copy)
    world.linear("other", Step("a", lambda ctx: 1))
    world.jobs.submit("copy", {"database": "a"}, idempotency_key="shared")

    with pytest.raises(Conflict) as caught:
        world.jobs.submit("other", {}, idempotency_key="shared")

    assert caught.value.field == "idempotency_key"
    assert world.store.list_jobs()[1] == 1


@pytest.mark.parametrize("key", ["", "k" * 201, 42])
def test_a_bad_idempotency_key_names_the_field(world: World, key: Any) -> None:
    world.linear("copy", Step("copy", lambda ctx: 1), params=Copy)

    with pytest.raises(ValidationError) as caught:
        world.jobs.submit("copy", {"database": "a"}, idempotency_key=key)

    assert caught.value.field == "idempotency_key"
    assert world.store.list_jobs()[1] == 0 and world.published == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "params.database"),
        ({"database": "a", "copies": 0}, "params.copies"),
        ({"database": "a", "copies": "many"}, "params.copies"),
        ({"database": "a", "colour": "blue"}, "params.colour"),
        (["a"], "params"),
    ],
)
def test_invalid_params_name_the_field(world: World, params: Any, field: str) -> None:
    world.linear("copy", Step("copy", lambda ctx: 1), params=Copy)

    with pytest.raises(ValidationError) as caught:
        world.jobs.submit("copy", params)

    assert caught.value.field == field
    assert caught.value.message.startswith(field)
    assert world.store.list_jobs()[1] == 0


@pytest.mark.parametrize("kind", ["nope", ""])
def test_an_unknown_kind_names_the_kind_field(world: World, kind: str) -> None:
    with pytest.raises(ValidationError) as caught:
        world.jobs.submit(kind, {})

    assert caught.value.field == "kind"


def test_unknown_kind_is_a_validation_error() -> None:
    assert issubclass(UnknownKind, ValidationError)


def test_submit_records_who_submitted_and_queues_by_settings(
    world: World, settings: Settings
) -> None:
    world.linear("mail", Step("send", lambda ctx: 1), queue="email")
    world.jobs.settings = settings.model_copy(update={"queue_email": "mail-prod"})

    summary, _ = world.jobs.submit("mail", {}, submitted_by="ada")

    job = world.describe(summary["id"])
    assert job["queue"] == "mail-prod" and job["submitted_by"] == "ada"
    assert world.published == [(summary["id"], "mail-prod")]
    assert world.messages(summary["id"], "job.submitted") == ["submitted mail by ada"]
    assert job["progress"] == {"done": 0, "total": 1, "message": "queued"}


def test_a_job_is_not_kept_when_the_broker_refuses_its_message(world: World) -> None:
    world.linear("copy", Step("copy", lambda ctx: 1), params=Copy)

    def broker_down(job_id: str, queue: str) -> None:
        raise BrokerUnavailable("broker did not confirm")

    jobs = Jobs(world.store, world.registry, world.settings, broker_down)
    with pytest.raises(BrokerUnavailable):
        jobs.submit("copy", {"database": "a"}, idempotency_key="k1")

    assert world.store.list_jobs()[1] == 0
    # and the same key works once the broker is back
    _, created = world.jobs.submit("copy", {"database": "a"}, idempotency_key="k1")
    assert created


# -- outputs and secrets -----------------------------------------------------------------


def test_a_step_returning_a_non_json_output_fails_with_a_clear_message(world: World) -> None:
    calls = counter()

    def handle(ctx: StepContext) -> Any:
        count(calls, "open")
        return {"handle": object()}

    world.linear("leaky", Step("open", handle, retry=Retry(attempts=3)))

    job = world.drive(world.submit("leaky"))

    assert job["status"] == "failed"
    assert job["error"]["type"] == "PermanentError"
    assert job["error"]["message"].startswith("step open returned a non-JSON output")
    assert "not JSON serializable" in job["error"]["message"]
    assert calls == {"open": 1}  # no use retrying


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_step_returning_a_non_finite_number_fails_with_a_clear_message(
    world: World, value: float
) -> None:
    # NaN and Infinity are not JSON: PostgreSQL's JSONB refuses them, and the API
    # would answer a body JSON clients cannot parse.
    world.linear("nan", Step("ratio", lambda ctx: {"ratio": value}))

    job = world.drive(world.submit("nan"))

    assert job["status"] == "failed"
    assert "non-JSON output" in job["error"]["message"]


def test_a_wait_with_non_json_state_fails_the_job_instead_of_crashing_the_worker(
    world: World,
) -> None:
    world.linear("bad-wait", Step("poll", lambda ctx: Wait(60, "later", {"conn": object()})))
    job_id = world.submit("bad-wait")

    job = world.drive(job_id)  # must not raise: the worker would crash on every redelivery

    assert job["status"] == "failed"
    assert "JSON" in job["error"]["message"]


def test_a_secret_in_an_error_never_appears_unmasked(world: World) -> None:
    def connect(ctx: StepContext) -> None:
        raise RuntimeError(f"could not connect to {SECRET_URL}: timeout")

    world.linear("db", Step("connect", connect, retry=Retry(attempts=2, backoff=0.01)))
    job_id = world.submit("db")

    job = world.drive(job_id)  # first failure: retrying
    shown_while_retrying = json.dumps(job)
    world.pass_time(job_id)
    job = world.drive(job_id)  # second failure: failed

    assert job["status"] == "failed"
    for shown in (shown_while_retrying, json.dumps(job)):
        assert "secret" not in shown
        assert MASKED_URL in shown
    assert job["error"]["message"] == f"could not connect to {MASKED_URL}: timeout"
    failed = next(h for h in job["history"] if h["event"] == "step.failed")
    assert MASKED_URL in failed["message"] and MASKED_URL in failed["data"]["traceback"]


def test_a_secret_in_progress_is_masked(world: World) -> None:
    def copy(ctx: StepContext) -> Any:
        ctx.progress(f"copying from {SECRET_URL}")
        return world.describe(ctx.job_id)["progress"]["message"]  # what a user sees meanwhile

    world.linear("p", Step("copy", copy))
    job = world.drive(world.submit("p"))

    assert job["result"] == f"copying from {MASKED_URL}"


def test_a_secret_in_a_wait_reason_never_appears_unmasked(world: World) -> None:
    world.linear("w", Step("copy", lambda ctx: ctx.wait(60, f"waiting for {SECRET_URL}")))

    job = world.drive(world.submit("w"))

    assert job["status"] == "waiting"
    shown = json.dumps(job)
    assert "secret" not in shown, [
        (k, v) for k, v in (("progress", job["progress"]), ("step", job["steps"][0]))
    ]


def test_a_secret_in_a_step_output_is_masked_where_the_job_is_shown(world: World) -> None:
    # Later steps need the real value; describe() (the API, the pages) must not show it.
    world.linear(
        "dsn",
        Step("make", lambda ctx: {"dsn": SECRET_URL}),
        Step("use", lambda ctx: ctx.outputs["make"]),
    )

    job = world.drive(world.submit("dsn"))

    assert job["status"] == "succeeded"
    assert "secret" not in json.dumps(job)
    assert job["result"] == {"dsn": MASKED_URL}
