"""A permanent failure undoes what the job did: each earlier step's ``revert``, latest first."""

from __future__ import annotations

import json
from typing import Any

import pytest

from prodinf import Step
from prodinf.engine.context import StepContext
from tests.unit.leaks import MASKED_URL, SECRET_URL, logged
from tests.unit.workers import fail_for_good
from tests.world import World

# -- reverting ---------------------------------------------------------------------------


def undoable(name: str, done: list[str], undone: list[tuple[str, Any]]) -> Step:
    def execute(ctx: StepContext) -> dict[str, str]:
        done.append(name)
        return {"made": name}

    def revert(ctx: StepContext) -> None:
        undone.append((name, ctx.output))

    return Step(name, execute, revert=revert)


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
    # Given an undoable step, a step without a revert, and a step that fails for good
    done: list[str] = []
    undone: list[tuple[str, Any]] = []
    world.linear(
        "mixed",
        undoable("copy", done, undone),
        Step("log", lambda ctx: "logged"),
        Step("check", fail_for_good),
    )

    # When it runs
    job = world.drive(world.submit("mixed"))

    # Then only the undoable step was undone; the other stays succeeded
    assert [name for name, _ in undone] == ["copy"]
    assert job["status"] == "reverted"
    assert [s["status"] for s in job["steps"]] == ["reverted", "succeeded", "failed"]


def test_a_revert_that_raises_leaves_the_step_revert_failed_and_the_job_failed(
    world: World, logs: pytest.LogCaptureFixture
) -> None:
    # Given a step whose revert fails (naming a URL with its password), and a
    # step after it that fails for good
    def cannot_undo(ctx: StepContext) -> None:
        raise RuntimeError(f"drop database on {SECRET_URL} refused")

    world.linear(
        "stuck-copy",
        Step("copy", lambda ctx: "copied", revert=cannot_undo),
        Step("check", fail_for_good),
    )
    job_id = world.submit("stuck-copy")

    # When it runs
    job = world.drive(job_id)

    # Then the step is revert_failed, the job failed, and the password is masked
    assert job["status"] == "failed"
    copy = job["steps"][0]
    assert copy["status"] == "revert_failed"
    assert copy["error"]["type"] == "RuntimeError"
    assert copy["error"]["message"] == f"drop database on {MASKED_URL} refused"
    # the job's error is still the failure that started it all
    assert job["error"]["step"] == "check"
    assert ("step.revert_failed", "copy") in world.events(job_id)
    assert "secret" not in json.dumps(job)
    assert "secret" not in logged(logs)


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
    # Given a step without a revert, then one that fails for good
    world.linear("plain", Step("a", lambda ctx: 1), Step("b", fail_for_good))

    # When it runs
    job = world.drive(world.submit("plain"))

    # Then the job failed, and nothing was reverted
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
