"""The job service: submit (idempotency, validation, the broker's answer), cancel, retry.

Jobs are submitted through ``Jobs`` and driven by ``Runner`` on a real SQLite
store (the ``world``, tests/world.py). One test publishes to the real embedded
broker (tests/broker.py) and makes it fail for real.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from prodinf import Step
from prodinf.config import Settings
from prodinf.engine.context import StepContext
from prodinf.engine.service import Jobs
from prodinf.exceptions import (
    BrokerUnavailable,
    Conflict,
    NotFound,
    PermanentError,
    UnknownKind,
    ValidationError,
)
from tests.broker import Broker
from tests.unit.workers import (
    Background,
    Gate,
    count,
    counter,
    expire_lease,
    fail_for_good,
    long_lease,
)
from tests.world import World

# -- submit: idempotency and validation --------------------------------------------------


class Copy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    database: str = Field(min_length=1)
    copies: int = Field(default=1, ge=1)


def test_an_idempotency_key_returns_the_existing_job(world: World) -> None:
    # Given a kind
    world.linear("copy", Step("copy", lambda ctx: 1), params=Copy)

    # When the same job is submitted twice with one idempotency key
    first, created = world.jobs.submit("copy", {"database": "a"}, idempotency_key="copy-a-1")
    again, created_again = world.jobs.submit("copy", {"database": "a"}, idempotency_key="copy-a-1")

    # Then the second submit returns the first job: one job, whose message was sent again
    # because it had not started (the first request may have died before sending it)
    assert created is True and created_again is False
    assert again["id"] == first["id"]
    assert world.store.list_jobs()[1] == 1
    assert world.published == [(first["id"], "jobs")] * 2


def test_an_idempotency_key_of_a_started_job_sends_nothing_again(world: World) -> None:
    # Given a job submitted with a key that a worker has run to its end
    world.linear("copy", Step("copy", lambda ctx: 1), params=Copy)
    first, _ = world.jobs.submit("copy", {"database": "a"}, idempotency_key="copy-a-1")
    world.drive(first["id"])

    # When the key is replayed
    again, created = world.jobs.submit("copy", {"database": "a"}, idempotency_key="copy-a-1")

    # Then the job is answered as it is, and no message was sent for it again
    assert (created, again["status"]) == (False, "succeeded")
    assert world.published == [(first["id"], "jobs")]


def test_an_idempotency_key_used_for_another_kind_is_a_conflict(world: World) -> None:
    # Given a job submitted with a key
    world.linear("copy", Step("copy", lambda ctx: 1), params=Copy)
    world.linear("other", Step("a", lambda ctx: 1))
    world.jobs.submit("copy", {"database": "a"}, idempotency_key="shared")

    # When the key is used to submit a job of another kind
    with pytest.raises(Conflict) as caught:
        world.jobs.submit("other", {}, idempotency_key="shared")

    # Then it is a conflict naming the key, and no second job is made
    assert caught.value.field == "idempotency_key"
    assert world.store.list_jobs()[1] == 1


@pytest.mark.parametrize("key", ["", "k" * 201, 42])
def test_a_bad_idempotency_key_names_the_field(world: World, key: Any) -> None:
    # Given a kind
    world.linear("copy", Step("copy", lambda ctx: 1), params=Copy)

    # When a job is submitted with an empty, too long or non-text key
    with pytest.raises(ValidationError) as caught:
        world.jobs.submit("copy", {"database": "a"}, idempotency_key=key)

    # Then it is refused naming the key, and nothing is stored or sent
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
    # Given a kind whose params are a model
    world.linear("copy", Step("copy", lambda ctx: 1), params=Copy)

    # When a job is submitted with params the model refuses
    with pytest.raises(ValidationError) as caught:
        world.jobs.submit("copy", params)

    # Then it is refused naming the first bad field, and nothing is stored
    assert caught.value.field == field
    assert caught.value.message.startswith(field)
    assert world.store.list_jobs()[1] == 0


@pytest.mark.parametrize("kind", ["nope", ""])
def test_an_unknown_kind_names_the_kind_field(world: World, kind: str) -> None:
    # Given no such kind, when a job of it is submitted
    with pytest.raises(ValidationError) as caught:
        world.jobs.submit(kind, {})

    # Then it is refused naming the kind
    assert caught.value.field == "kind"


def test_unknown_kind_is_a_validation_error() -> None:
    """An unknown kind is bad input: the API answers it as a 4xx naming the field."""
    assert issubclass(UnknownKind, ValidationError)


def test_submit_records_who_submitted_and_queues_by_settings(
    world: World, settings: Settings
) -> None:
    # Given a kind on the email queue, which settings name "mail-prod"
    world.linear("mail", Step("send", lambda ctx: 1), queue="email")
    world.jobs.settings = settings.model_copy(update={"queue_email": "mail-prod"})

    # When someone submits a job of it
    summary, _ = world.jobs.submit("mail", {}, submitted_by="ada")

    # Then the job is on the configured queue, saying who submitted it
    job = world.describe(summary["id"])
    assert job["queue"] == "mail-prod" and job["submitted_by"] == "ada"
    assert world.published == [(summary["id"], "mail-prod")]
    assert world.messages(summary["id"], "job.submitted") == ["submitted mail by ada"]
    assert job["progress"] == {"done": 0, "total": 1, "message": "queued"}


def test_a_job_is_not_kept_when_the_broker_refuses_its_message(
    world: World, broker: Broker
) -> None:
    # Given jobs submitted through the real embedded broker, which cannot store a message
    world.linear("copy", Step("copy", lambda ctx: 1), params=Copy)
    jobs = Jobs(world.store, world.registry, world.settings, broker.publish)
    with broker.down():
        # When a job is submitted
        with pytest.raises(BrokerUnavailable) as caught:
            jobs.submit("copy", {"database": "a"}, idempotency_key="k1")

        # Then the caller is told, and no job is kept that no worker would ever hear of
        assert "broker unavailable" in str(caught.value)
        assert world.store.list_jobs()[1] == 0

    # And once the broker is back, the same key makes the job, and its message is there
    summary, created = jobs.submit("copy", {"database": "a"}, idempotency_key="k1")
    assert created
    assert broker.messages() == [(summary["id"], "jobs")]
    assert world.store.list_jobs()[1] == 1


# -- cancel() ----------------------------------------------------------------------------


def test_cancelling_a_queued_job_cancels_it_at_once(world: World) -> None:
    # Given a job no worker has started
    calls = counter()
    world.linear("todo", Step("a", lambda ctx: count(calls, "a")), Step("b", lambda ctx: 2))
    job_id = world.submit("todo")

    # When it is cancelled
    summary = world.jobs.cancel(job_id)

    # Then it is cancelled at once, every step with it
    assert summary["status"] == "cancelled"
    job = world.describe(job_id)
    assert [s["status"] for s in job["steps"]] == ["cancelled", "cancelled"]
    assert job["finished_at"] is not None
    assert world.events(job_id) == [("job.submitted", None), ("job.cancelled", None)]
    # and the message still in the broker finds nothing to do
    assert world.drive(job_id)["status"] == "cancelled"
    assert calls == {}


def test_cancelling_a_waiting_job_cancels_it_at_once(world: World) -> None:
    # Given a job waiting for a remote job
    calls = counter()

    def poll(ctx: StepContext) -> Any:
        count(calls, "poll")
        return ctx.wait(60, "remote job running")

    world.linear("poller", Step("poll", poll), Step("after", lambda ctx: 1))
    job_id = world.submit("poller")
    assert world.drive(job_id)["status"] == "waiting"

    # When it is cancelled, then it is cancelled at once
    assert world.jobs.cancel(job_id)["status"] == "cancelled"

    # And when its wait would have come due, nothing runs
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
    # Given a job that succeeded
    world.linear("fine", Step("a", lambda ctx: 1))
    job_id = world.submit("fine")
    world.drive(job_id)

    # When it is cancelled, then it is a conflict (each time); an unknown job is not found
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
    # Given a job cancelled before it ran
    world.linear("todo", Step("a", lambda ctx: "a"), Step("b", lambda ctx: "b"))
    job_id = world.submit("todo")
    world.jobs.cancel(job_id)

    # When it is retried and driven
    world.jobs.retry(job_id)
    job = world.drive(job_id)

    # Then it runs to the end, no longer asked to stop
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
    # Given a queued, a waiting and a succeeded job
    world.linear("ok", Step("a", lambda ctx: ctx.wait(60, "later") if not ctx.state else 1))
    queued = world.submit("ok")
    waiting = world.submit("ok")
    world.drive(waiting)
    world.linear("fine", Step("a", lambda ctx: 1))
    succeeded = world.submit("fine")
    world.drive(succeeded)

    # When each is retried, then it is a conflict naming the id; an unknown job is not found
    for job_id in (queued, waiting, succeeded):
        with pytest.raises(Conflict) as caught:
            world.jobs.retry(job_id)
        assert caught.value.field == "id"
    with pytest.raises(NotFound):
        world.jobs.retry("no-such-job")


def test_retry_of_a_running_job_is_a_conflict(world: World) -> None:
    # Given a job whose step is running on a worker
    gate = Gate()
    world.linear("long", Step("work", lambda ctx: gate.hold()))
    job_id = world.submit("long")
    other = Background(world.new_runner(), job_id)
    assert gate.entered.wait(5)
    try:
        # When it is retried, then it is a conflict that says it is running
        with pytest.raises(Conflict, match="is running"):
            world.jobs.retry(job_id)
    finally:
        gate.released.set()
        other.join()
