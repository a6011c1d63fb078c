"""Child jobs on every store: the children a step starts, and the wake-up their ends give
it, even when they end at the same instant on different workers."""

from __future__ import annotations

from typing import Any

from prodinf import Child, Step, StepContext
from prodinf.status import TERMINAL
from tests.contract.lab import at_once
from tests.world import World


def wait_for_eight(ctx: StepContext) -> Any:
    children = ctx.children()
    if len(children) == 8 and all(c.status in TERMINAL for c in children.values()):
        return sorted(c.result for c in children.values())
    return ctx.start([Child(f"c{i}", "one") for i in range(8)], "waiting for 8 jobs")


def test_children_ending_together_each_wake_the_parent_and_it_ends(world: World) -> None:
    # Given a parent waiting on eight children
    world.linear("one", Step("one", lambda ctx: 1))
    world.linear("parent", Step("wait", wait_for_eight))
    parent = world.submit("parent")
    assert world.drive(parent)["status"] == "waiting"
    children = [j["id"] for j in world.store.list_jobs(kind="one")[0]]
    assert len(children) == 8
    world.published.clear()

    # When eight workers end the eight children at the same instant
    at_once(8, lambda i: world.new_runner().drive(children[i]))

    # Then the parent's step is due (its message went out at least once), and run
    # again it ends with every child's result
    assert (parent, "jobs.due") in world.published
    job = world.drive(parent)
    assert job["status"] == "succeeded"
    assert job["result"] == [1] * 8


def wait_for_the_last_of_eight(ctx: StepContext) -> Any:
    children = ctx.children()
    if len(children) == 8 and all(c.status in TERMINAL for c in children.values()):
        return sorted(c.result for c in children.values())
    return ctx.start([Child(f"c{i}", "one") for i in range(8)], "waiting for 8", last=True)


def test_children_ending_together_wake_a_parent_waiting_for_the_last_once(
    world: World,
) -> None:
    # Given a parent waiting for the last of eight children
    world.linear("one", Step("one", lambda ctx: 1))
    world.linear("parent", Step("wait", wait_for_the_last_of_eight))
    parent = world.submit("parent")
    assert world.drive(parent)["status"] == "waiting"
    children = [j["id"] for j in world.store.list_jobs(kind="one")[0]]

    # When six end one by one, none wakes it
    world.published.clear()
    for child in children[:6]:
        world.drive(child)
    assert world.published == []

    # When the last two end at the same instant on two workers
    at_once(2, lambda i: world.new_runner().drive(children[6 + i]))

    # Then exactly one of those ends woke it (each counted the other, in turn), and it
    # ends with every result
    assert world.published == [(parent, "jobs.due")]
    job = world.drive(parent)
    assert job["status"] == "succeeded"
    assert job["result"] == [1] * 8
