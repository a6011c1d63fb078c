"""Flows, retry policies, the kinds registry and the planner: the pure parts of the engine."""

from __future__ import annotations

import statistics
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from prodinf import Flow, Retry, Step
from prodinf.engine.planner import Claim, Finish, Idle, plan
from prodinf.engine.registry import NoParams, Registry, job_kind
from prodinf.exceptions import FlowError, UnknownKind, ValidationError
from prodinf.status import JobStatus
from prodinf.store import JobRow, StepRow
from prodinf.store.types import utcnow


def noop(ctx: Any) -> None:
    return None


def step(name: str, after: tuple[str, ...] | None = None) -> Step:
    return Step(name, noop, after=after)


# -- flows -------------------------------------------------------------------------------


def test_a_flow_is_linear_by_default() -> None:
    # Given steps that do not say what they come after
    flow = Flow.of(step("a"), step("b"), step("c"))

    # Then each comes after the one before it, and the last is the only sink
    assert flow.deps == {"a": (), "b": ("a",), "c": ("b",)}
    assert flow.sinks() == ["c"]
    assert list(flow.by_name) == ["a", "b", "c"]


def test_after_names_dependencies_and_empty_after_means_none() -> None:
    # Given steps naming what they come after, one of them nothing
    flow = Flow(
        [
            step("root"),
            step("left", after=("root",)),
            step("right", after=("root",)),
            step("join", after=("left", "right")),
            step("side", after=()),
        ]
    )

    # Then those are their dependencies, and both ends are sinks
    assert flow.deps == {
        "root": (),
        "left": ("root",),
        "right": ("root",),
        "join": ("left", "right"),
        "side": (),
    }
    assert flow.sinks() == ["join", "side"]


def test_a_step_after_a_later_step_is_fine() -> None:
    # Given a step listed before the step it comes after
    flow = Flow.of(step("b", after=("a",)), step("a", after=()))

    # Then the order of the list does not matter
    assert flow.deps["b"] == ("a",)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([step("a"), step("a")], "step 'a' appears twice"),
        ([step("a"), step("b", after=("x",))], "step 'b' depends on unknown step 'x'"),
        ([step("a", after=("b",)), step("b", after=("a",))], "cycle"),
        ([step("a", after=("a",))], "cycle"),
        ([step("a", after=()), step("b", after=("c",)), step("c")], "cycle"),
        ([], "at least one step"),
    ],
    ids=["duplicate", "unknown-dep", "two-cycle", "self", "linear-default-cycle", "empty"],
)
def test_invalid_flows_are_refused(steps: list[Step], message: str) -> None:
    # When a flow is made of these steps, then it is refused, saying why
    with pytest.raises(FlowError, match=message):
        Flow(steps)


def test_a_flow_error_is_permanent_and_a_server_error() -> None:
    # A kind that builds a bad flow is the kind's author's fault, not the caller's.
    # When a kind builds a bad flow, then the error is a 500
    with pytest.raises(FlowError) as caught:
        Flow([])
    assert caught.value.status_code == 500


# -- retry policies ----------------------------------------------------------------------


def test_retry_needs_at_least_one_attempt() -> None:
    # When a policy allows no attempt, then it is refused
    with pytest.raises(FlowError):
        Retry(attempts=0)


def test_retry_delay_doubles_without_jitter_and_caps_at_max_backoff() -> None:
    # Given a 2 s backoff capped at 30 s, without jitter
    retry = Retry(backoff=2.0, max_backoff=30.0, jitter=0.0)

    # Then each failure doubles the delay, up to the cap
    assert [retry.delay(n) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert retry.delay(0) == 2.0


def test_retry_delay_jitter_stays_within_its_bounds_and_varies() -> None:
    # Given a backoff with 20% jitter
    retry = Retry(backoff=1.0, max_backoff=1000.0, jitter=0.2)

    # Then delays vary within 20% of the doubled backoff, centred on it
    for failures, base in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0)]:
        delays = [retry.delay(failures) for _ in range(300)]
        assert base * 0.8 <= min(delays) and max(delays) <= base * 1.2
        assert len(set(delays)) > 1  # jitter is applied
        assert statistics.mean(delays) == pytest.approx(base, rel=0.05)


def test_retry_delay_never_exceeds_max_backoff_even_with_jitter() -> None:
    # Given a capped backoff with jitter
    retry = Retry(backoff=1.0, max_backoff=10.0, jitter=0.2)

    # Then jitter never takes a delay past the cap
    assert max(retry.delay(20) for _ in range(300)) <= 10.0


def test_retry_delay_after_very_many_failures_is_max_backoff() -> None:
    # A policy may allow thousands of attempts (wait_for_url allows up to 1000 looks);
    # the delay must stay max_backoff rather than overflow a float.
    # Given a policy of 5000 attempts
    retry = Retry(attempts=5000, backoff=1.0, max_backoff=300.0, jitter=0.0)

    # Then after 1100 failures the delay is the cap, not an overflow
    assert retry.delay(1100) == 300.0


# -- the registry ------------------------------------------------------------------------


def test_job_kind_registers_into_the_given_registry_only() -> None:
    # Given a kind registered into a registry of its own
    reg = Registry()

    @job_kind("sample", queue="event", into=reg)
    def sample(params: NoParams) -> Flow:
        """Does a sample thing."""
        return Flow.of(step("a"))

    # Then that registry has it, as declared, and the builder is unchanged
    kind = reg.get("sample")
    assert "sample" in reg and [k.name for k in reg.all()] == ["sample"]
    assert kind.queue == "event"
    assert kind.description == "Does a sample thing."
    assert kind.flow(kind.validate({})).sinks() == ["a"]
    assert sample(NoParams()).sinks() == ["a"]  # the builder is returned unchanged


def test_two_builders_for_one_kind_name_are_refused() -> None:
    # Given two builders
    reg = Registry()

    def build_one(params: NoParams) -> Flow:
        return Flow.of(step("a"))

    def build_two(params: NoParams) -> Flow:
        return Flow.of(step("b"))

    # When one is registered twice under a name, then that is fine;
    # when the other is registered under it too, then it is refused
    job_kind("dup", into=reg)(build_one)
    job_kind("dup", into=reg)(build_one)  # importing the same module twice is harmless
    with pytest.raises(ValueError, match="registered twice"):
        job_kind("dup", into=reg)(build_two)


def test_an_unknown_kind_names_the_kind_field() -> None:
    # When a registry is asked for a kind it does not have
    with pytest.raises(UnknownKind) as caught:
        Registry().get("nope")

    # Then it is a validation error naming the kind
    assert caught.value.field == "kind"
    assert isinstance(caught.value, ValidationError)


def test_params_are_validated_naming_the_first_bad_field() -> None:
    # Given a kind whose params are a model
    class Params(BaseModel):
        database: str
        copies: int = 1

    reg = Registry()
    job_kind("p", params=Params, into=reg)(lambda p: Flow.of(step("a")))
    kind = reg.get("p")

    # Then good params get defaults, bad ones name the field, and the schema says
    # what is required
    assert kind.validate({"database": "x"}).copies == 1
    with pytest.raises(ValidationError) as caught:
        kind.validate({"database": "x", "copies": "lots"})
    assert caught.value.field == "params.copies"
    assert kind.schema()["required"] == ["database"]


def test_no_params_means_none_and_refuses_extra_fields() -> None:
    # Given a kind without params
    reg = Registry()
    job_kind("bare", into=reg)(lambda p: Flow.of(step("a")))
    kind = reg.get("bare")

    # Then none are accepted, and any given are refused by name
    assert kind.validate(None) == NoParams()
    with pytest.raises(ValidationError) as caught:
        kind.validate({"surprise": 1})
    assert caught.value.field == "params.surprise"


# -- the planner (pure: rows that were never stored) -------------------------------------

NOW = utcnow()


def job(**kw: Any) -> JobRow:
    return JobRow(id="j", status=kw.pop("status", "running"), cancel_requested=False, **kw)


def row(
    name: str, position: int, status: str = "pending", after: list[str] | None = None, **kw: Any
) -> StepRow:
    return StepRow(
        job_id="j",
        name=name,
        position=position,
        status=status,
        after=after if after is not None else [],
        attempts=0,
        state={},
        **kw,
    )


def test_plan_claims_the_first_ready_step_and_asks_for_fan_out_when_more_are_ready() -> None:
    # Given a diamond whose root has succeeded
    steps = [
        row("root", 0, "succeeded"),
        row("left", 1, after=["root"]),
        row("right", 2, after=["root"]),
        row("join", 3, after=["left", "right"]),
    ]

    # When the planner looks
    decision = plan(job(), steps, set(), NOW)

    # Then it claims the first branch and asks for a fan-out for the other
    assert isinstance(decision, Claim)
    assert (decision.step.name, decision.revert, decision.fanout) == ("left", False, True)


def test_plan_waits_for_a_live_lease_and_reclaims_an_expired_one() -> None:
    # Given a step running under a lease
    running = row("a", 0, "running", lease_until=NOW + timedelta(seconds=5))

    # Then while the lease lives the planner waits until it ends
    assert plan(job(), [running], set(), NOW) == Idle(JobStatus.RUNNING, running.lease_until)

    # And once it has ended the planner claims the step again
    running.lease_until = NOW - timedelta(seconds=1)
    decision = plan(job(), [running], set(), NOW)
    assert isinstance(decision, Claim) and decision.step is running


def test_plan_sleeps_until_the_earliest_due_wait() -> None:
    # Given two waiting steps, due soon and later
    soon, later = NOW + timedelta(seconds=5), NOW + timedelta(seconds=50)
    steps = [
        row("a", 0, "waiting", due_at=later),
        row("b", 1, "waiting", due_at=soon, after=[]),
    ]

    # Then the planner sleeps until the sooner, and then claims that step
    assert plan(job(), steps, set(), NOW) == Idle(JobStatus.WAITING, soon)
    decision = plan(job(), steps, set(), soon)
    assert isinstance(decision, Claim) and decision.step.name == "b"


def test_plan_reverts_the_latest_finished_revertible_step_first() -> None:
    # Given three succeeded steps, two of them revertible, and a failed step
    steps = [
        row("a", 0, "succeeded", finished_at=NOW - timedelta(seconds=3)),
        row("b", 1, "succeeded", finished_at=NOW - timedelta(seconds=2)),
        row("c", 2, "succeeded", finished_at=NOW - timedelta(seconds=1)),
        row("d", 3, "failed"),
    ]

    # When the planner looks
    decision = plan(job(), steps, {"a", "b"}, NOW)

    # Then it reverts the revertible step that finished last
    assert isinstance(decision, Claim)
    assert (decision.step.name, decision.revert) == ("b", True)


def test_plan_finishes_succeeded_failed_or_cancelled() -> None:
    # When nothing is left to run, then the job finishes as its steps say; a
    # cancel requested finishes it cancelled
    assert plan(job(), [row("a", 0, "succeeded")], set(), NOW) == Finish(JobStatus.SUCCEEDED)
    assert plan(job(), [row("a", 0, "failed")], set(), NOW) == Finish(JobStatus.FAILED)
    assert plan(job(), [row("a", 0, "reverted"), row("b", 1, "failed")], set(), NOW) == Finish(
        JobStatus.REVERTED
    )
    cancelled = job()
    cancelled.cancel_requested = True
    assert plan(cancelled, [row("a", 0)], set(), NOW) == Finish(JobStatus.CANCELLED)


def test_a_worker_without_the_kind_fails_the_job_saying_which_and_what_to_do(
    settings: Any,
) -> None:
    """Given a job of a kind the portal knows and its worker does not (a plugin missing
    there), when the worker runs it, then it fails saying so and how to fix it."""
    from tests.world import World

    world = World(settings)
    try:

        @job_kind("publish", params=NoParams, into=world.registry)
        def publish(params: NoParams) -> Flow:
            return Flow.of(step("go"))

        job, _ = world.jobs.submit("publish", {})
        bare = Registry()
        from prodinf.engine.runner import Runner

        Runner(world.store, bare, settings, world.publish).drive(job["id"])
        detail = world.store.describe(job["id"])
        assert detail["status"] == JobStatus.FAILED
        said = detail["error"]["message"]
        assert "has no kind 'publish'" in said and "PRODINF_PLUGINS" in said
    finally:
        world.close()
