"""The runner drives a job as a worker's task would: a linear flow, a graph, the result.

The engine runs for real on a SQLite store (the ``world``, tests/world.py); each
test registers small kinds in a fresh registry, submits through ``Jobs`` and
drives with ``Runner.drive``. ``publish`` records (job id, queue): the seam to the
broker, which tests/unit/test_reconciler.py and tests/integration cover for real.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field

from prodinf import Step
from prodinf.config import Settings
from prodinf.engine.context import StepContext
from prodinf.engine.registry import Registry
from prodinf.engine.runner import Runner
from tests.unit.workers import Background, Gate, count, counter
from tests.world import World

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
    # Given a kind whose params are a model, and a step that reads them
    class Greeting(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str
        times: int = Field(default=1, ge=1)

    def say(ctx: StepContext) -> str:
        params = cast(Greeting, ctx.params)
        return " ".join([f"hi {params.name}"] * params.times)

    world.linear("greet", Step("say", say), params=Greeting)

    # When a job is submitted with params and driven
    job = world.drive(world.submit("greet", {"name": "ada", "times": 2}))

    # Then the params were validated into the model the step read
    assert job["params"] == {"name": "ada", "times": 2}
    assert job["result"] == "hi ada hi ada"


def test_driving_a_finished_or_unknown_job_does_nothing(world: World) -> None:
    # Given a job that has finished
    calls = counter()
    world.linear("once", Step("a", lambda ctx: count(calls, "a")))
    job_id = world.submit("once")
    world.drive(job_id)

    # When it is driven again, and a job that does not exist is driven
    job = world.drive(job_id)
    world.runner.drive("no-such-job")

    # Then nothing ran again, and nothing failed
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
    # Given a diamond: root, then left and right in parallel, then join
    diamond(world)
    job_id = world.submit("diamond")

    # When one worker drives it
    job = world.drive(job_id)

    # Then every step ran, and the join saw the outputs of both branches
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
    # Given a flow that ends in two steps, neither after the other
    world.linear(
        "two-sinks",
        Step("root", lambda ctx: 2),
        Step("square", lambda ctx: ctx.outputs["root"] ** 2, after=("root",)),
        Step("cube", lambda ctx: ctx.outputs["root"] ** 3, after=("root",)),
    )

    # When it runs
    job = world.drive(world.submit("two-sinks"))

    # Then its result is both steps' outputs, by name
    assert job["status"] == "succeeded"
    assert job["result"] == {"square": 4, "cube": 8}


def test_a_kind_can_shape_its_result_from_all_outputs(world: World) -> None:
    # Given a kind that makes its result from all its outputs
    world.linear(
        "shaped",
        Step("a", lambda ctx: 1),
        Step("b", lambda ctx: 2),
        result=lambda outputs: {"total": outputs["a"] + outputs["b"]},
    )

    # When it runs
    job = world.drive(world.submit("shaped"))

    # Then the result is what the kind made
    assert job["result"] == {"total": 3}
