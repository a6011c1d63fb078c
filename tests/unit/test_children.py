"""Child jobs: a step starts jobs of this prodinf, waits without a worker, and the end of
each wakes it in the transaction that records that end.

The engine runs for real on SQLite (the ``world``); ``world.published`` is what would
have been sent to the broker after each commit.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from prodinf import Child, Step, StepContext
from prodinf.status import TERMINAL
from tests.unit.workers import fail_for_good
from tests.world import World


class Echo(BaseModel):
    value: int


def fan_out(ctx: StepContext) -> Any:
    """Start three children; once all have ended, return their results by name."""
    children = ctx.children()
    wanted = [Child(f"c{i}", "echo", {"value": i}) for i in range(3)]
    if len(children) == len(wanted) and all(c.status in TERMINAL for c in children.values()):
        return {name: c.result for name, c in sorted(children.items())}
    return ctx.start(wanted, "waiting for 3 jobs")


def world_with_kinds(world: World) -> World:
    world.linear("echo", Step("echo", lambda ctx: ctx.params.value * 10), params=Echo)
    world.linear("parent", Step("fan_out", fan_out))
    return world


def jobs_of_kind(world: World, kind: str) -> list[dict[str, Any]]:
    jobs, _ = world.store.list_jobs(kind=kind)
    return list(jobs)


def test_a_step_starts_its_children_once_and_each_end_wakes_it(world: World) -> None:
    # Given a job whose step starts three child jobs
    world = world_with_kinds(world)
    parent = world.submit("parent")
    world.published.clear()

    # When it runs
    assert world.drive(parent)["status"] == "waiting"

    # Then three children exist, their messages went out, and the parent waits
    children = jobs_of_kind(world, "echo")
    assert len(children) == 3
    assert {job_id for job_id, _ in world.published} == {c["id"] for c in children}

    # When two children end, each wakes the parent at once (its message is sent), and
    # the parent, run again, starts nothing twice and goes on waiting
    for child in children[:2]:
        world.published.clear()
        world.drive(child["id"])
        assert (parent, "jobs.due") in world.published
        assert world.drive(parent)["status"] == "waiting"
    assert len(jobs_of_kind(world, "echo")) == 3

    # When the last one ends, the parent runs again and ends with their results
    world.published.clear()
    world.drive(children[2]["id"])
    assert (parent, "jobs.due") in world.published
    job = world.drive(parent)
    assert job["status"] == "succeeded"
    assert job["result"] == {"c0": 0, "c1": 10, "c2": 20}
    events = [h["event"] for h in job["history"]]
    assert events.count("child.started") == 3


def test_a_step_run_again_before_its_wait_was_recorded_starts_no_child_twice(
    world: World,
) -> None:
    # Given a parent waiting on its children
    world = world_with_kinds(world)
    parent = world.submit("parent")
    world.drive(parent)

    # When its step runs again (its wait came due, a redelivered message) many times
    for _ in range(3):
        world.pass_time(parent)
        world.drive(parent)

    # Then each child exists once, with the idempotency key made from the parent
    children = jobs_of_kind(world, "echo")
    assert len(children) == 3
    keys = sorted(world.describe(c["id"])["idempotency_key"] for c in children)
    assert keys == [f"{parent}/fan_out/c{i}" for i in range(3)]


def test_children_that_ended_before_the_wait_was_recorded_run_the_step_again_at_once(
    world: World,
) -> None:
    # Given a parent whose children all ran to their end while it was away
    world = world_with_kinds(world)
    parent = world.submit("parent")
    world.drive(parent)
    for child in jobs_of_kind(world, "echo"):
        world.drive(child["id"])

    # When its step runs again it ends at once, in the same drive
    world.pass_time(parent)
    assert world.drive(parent)["status"] == "succeeded"


def test_a_child_whose_params_do_not_validate_fails_the_step_naming_it(world: World) -> None:
    # Given a step that starts a child with a bad param
    world.linear("echo", Step("echo", lambda ctx: ctx.params.value), params=Echo)
    world.linear("bad", Step("start", lambda ctx: ctx.start([Child("c", "echo", {})], "w")))
    job_id = world.submit("bad")

    # When it runs, the step fails for good, saying which job and which field
    job = world.drive(job_id)
    assert job["status"] == "failed"
    assert "start could not start its jobs" in job["error"]["message"]
    assert "params.value" in job["error"]["message"]
    assert jobs_of_kind(world, "echo") == []


def test_a_failed_or_cancelled_child_wakes_its_parent_too(world: World) -> None:
    # Given a parent waiting on a child that fails and one that is cancelled
    world.linear("boom", Step("boom", fail_for_good))
    world.linear("slow", Step("slow", lambda ctx: ctx.wait(600, "slow")))

    def two(ctx: StepContext) -> Any:
        children = ctx.children()
        if len(children) == 2 and all(c.status in TERMINAL for c in children.values()):
            return {name: c.status for name, c in children.items()}
        return ctx.start([Child("boom", "boom"), Child("slow", "slow")], "waiting")

    world.linear("parent", Step("two", two))
    parent = world.submit("parent")
    world.drive(parent)
    boom, slow = (jobs_of_kind(world, kind)[0]["id"] for kind in ("boom", "slow"))

    # When one fails and the other is cancelled
    world.drive(boom)
    world.drive(slow)
    world.published.clear()
    world.jobs.cancel(slow)

    # Then the cancel woke the parent, which ends seeing both
    assert (parent, "jobs.due") in world.published
    job = world.drive(parent)
    assert job["result"] == {"boom": "failed", "slow": "cancelled"}


def test_a_child_that_ends_while_its_parent_runs_has_the_parent_run_again_at_once(
    world: World,
) -> None:
    # Given a parent that starts children a, c and d (which runs long), and b once a
    # succeeded (as an event's ``after``); woken by c's end, it sees a still running
    # while a ends meanwhile, on another worker (a's wake finds the parent running,
    # not waiting)
    ending: list[str] = []
    other = world.new_runner()

    def graph(ctx: StepContext) -> Any:
        children = ctx.children()
        if "b" in children and children["b"].status in TERMINAL:
            return "done"
        if "a" in children and children["a"].status in TERMINAL:
            return ctx.start([Child("b", "echo", {"value": 2})], "waiting for b")
        if ending:
            world.drive(ending.pop(), other)  # a ends after the step read it
        going = [Child("a", "echo", {"value": 1}), Child("d", "echo", {"value": 4})]
        if "c" not in children:
            going.append(Child("c", "echo", {"value": 3}))
        return ctx.start(going, "waiting for a and d")

    world.linear("echo", Step("echo", lambda ctx: ctx.params.value), params=Echo)
    world.linear("graph", Step("graph", graph))
    parent = world.submit("graph")
    assert world.drive(parent)["status"] == "waiting"
    echoes = [world.describe(j["id"]) for j in jobs_of_kind(world, "echo")]
    started = {j["params"]["value"]: j["id"] for j in echoes}
    ending.append(started[1])
    world.drive(started[3])  # c ends: the parent is due

    # When the parent runs, and a ends while it does
    world.published.clear()
    world.drive(parent)

    # Then the parent runs again at once, not after its week-long wait, and starts b
    assert world.describe(started[1])["status"] == "succeeded"
    assert world.step(parent, "graph")["status"] == "waiting"
    (b,) = [j["id"] for j in jobs_of_kind(world, "echo") if j["id"] not in started.values()]
    assert world.describe(started[4])["status"] == "queued"
    assert world.published == [(b, "jobs")]
