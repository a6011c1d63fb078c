"""The reconciler on a real SQLite store and the real embedded broker: it publishes each
due job once, and only due jobs.

Messages go through prodinf's ``Runtime.publish`` to the embedded broker
(kombu's filesystem transport, tests/broker.py) and are read back from it;
``broker.take()`` consumes them, as workers would. A broker that fails is made to
fail for real (``broker.down()``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from prodinf import Step
from prodinf.config import Settings
from prodinf.engine.context import StepContext
from prodinf.store import JobRow, StepRow
from prodinf.store.types import utcnow
from tests.broker import Broker
from tests.waiting import wait_until
from tests.world import World

REDRIVE = 30.0


@pytest.fixture
def world(settings: Settings, broker: Broker) -> Iterator[World]:
    """The engine on SQLite, publishing to the real embedded broker."""
    w = World(settings, publish=broker.publish)
    yield w
    w.close()


def status(world: World, job_id: str) -> str:
    return str(world.describe(job_id)["status"])


def next_run_at(world: World, job_id: str) -> Any:
    with world.store.session() as session:
        return session.scalar(select(JobRow.next_run_at).where(JobRow.id == job_id))


def waits_once(reason: str = "remote job running") -> Callable[[StepContext], Any]:
    def execute(ctx: StepContext) -> Any:
        return "done" if ctx.state.get("waited") else ctx.wait(60, reason, waited=True)

    return execute


def waiting_job(world: World, broker: Broker, kind: str = "poller", queue: str = "jobs") -> str:
    if kind not in world.registry:
        world.linear(kind, Step("poll", waits_once()), queue=queue)
    job_id = world.submit(kind)
    world.runner.drive(job_id)
    assert status(world, job_id) == "waiting"
    broker.take()
    return job_id


def test_a_due_waiting_job_is_published_once_however_often_reconcile_runs(
    world: World, broker: Broker
) -> None:
    # Given a waiting job whose due time has passed
    job_id = waiting_job(world, broker)
    world.pass_time(job_id)

    # When the reconciler runs twice
    first, second = world.reconcile(), world.reconcile()

    # Then the job was published once, and will not be again before redrive_after
    assert (first, second) == (1, 0)
    assert broker.take() == [(job_id, "jobs")]
    assert next_run_at(world, job_id) > utcnow() + timedelta(seconds=REDRIVE - 5)

    # And the message it got drives it to the end
    world.runner.drive(job_id)
    assert status(world, job_id) == "succeeded"


def test_concurrent_reconcilers_publish_a_due_job_once(world: World, broker: Broker) -> None:
    # Given five due waiting jobs
    job_ids = [waiting_job(world, broker) for _ in range(5)]
    for job_id in job_ids:
        world.pass_time(job_id)

    # When four reconcilers run at the same instant
    start = threading.Barrier(4)
    counts: list[int] = []

    def one_reconciler() -> None:
        start.wait(5)
        counts.append(world.reconcile())

    threads = [threading.Thread(target=one_reconciler) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    # Then each job was published once in all
    assert sum(counts) == 5
    assert sorted(broker.take()) == sorted((job_id, "jobs") for job_id in job_ids)


def test_a_job_not_yet_due_is_not_published(world: World, broker: Broker) -> None:
    # Given a job waiting for a minute
    job_id = waiting_job(world, broker)

    # When the reconciler runs, then it publishes nothing
    assert world.reconcile() == 0
    assert broker.take() == []
    assert status(world, job_id) == "waiting"


def test_queues_limit_what_a_reconciler_publishes(world: World, broker: Broker) -> None:
    # Given due jobs on the email and the handover queues
    mail = waiting_job(world, broker, "mail", queue="email")
    copy = waiting_job(world, broker, "copy", queue="handover")
    for job_id in (mail, copy):
        world.pass_time(job_id)

    # When a reconciler runs for some queues, then it publishes only their jobs
    assert world.reconcile(queues=["email"]) == 1
    assert broker.take() == [(mail, "email")]
    assert world.reconcile(queues=["event"]) == 0
    assert world.reconcile(queues=["handover", "event"]) == 1
    assert broker.take() == [(copy, "handover")]


def test_a_queued_job_whose_message_was_lost_is_published_after_redrive_after(
    world: World, broker: Broker
) -> None:
    # Given a queued job whose message was lost
    world.linear("quick", Step("a", lambda ctx: 1))
    job_id = world.submit("quick")
    broker.take()  # the message is lost: no worker will ever see it

    # When the reconciler runs before redrive_after, then it trusts the message
    assert world.reconcile() == 0

    # When it runs after, then the job is published again, and driving it finishes it
    world.pass_time(job_id)
    assert world.reconcile() == 1
    assert broker.take() == [(job_id, "jobs")]
    world.runner.drive(job_id)
    assert status(world, job_id) == "succeeded"


def test_a_job_whose_worker_died_is_published_when_its_lease_runs_out(
    world: World, broker: Broker
) -> None:
    # Given a worker inside a step (its thread blocks; a 60 s lease means its heartbeat,
    # every 20 s, does not tick during the test)
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def work(ctx: StepContext) -> int:
        calls.append(1)
        if len(calls) == 1:
            entered.set()
            release.wait(10)
        return len(calls)

    world.linear("work", Step("work", work))
    job_id = world.submit("work")
    broker.take()
    stalled = world.new_runner(world.settings.model_copy(update={"lease_seconds": 60.0}))
    thread = threading.Thread(target=stalled.drive, args=(job_id,))
    thread.start()
    try:
        assert entered.wait(5)

        # While the lease is live, the job is not due
        assert world.reconcile() == 0

        # When the lease runs out without a renewal (the worker died)
        with world.store.session() as session:
            session.execute(
                update(StepRow)
                .where(StepRow.job_id == job_id)
                .values(lease_until=utcnow() - timedelta(seconds=1))
            )
        world.pass_time(job_id)

        # Then the reconciler publishes it, and another worker finishes it
        assert world.reconcile() == 1
        assert broker.take() == [(job_id, "jobs")]
        world.runner.drive(job_id)
        assert status(world, job_id) == "succeeded"
        assert world.store.describe(job_id)["result"] == 2
    finally:
        release.set()
        thread.join(10)


def test_finished_jobs_are_never_published(world: World, broker: Broker) -> None:
    # Given a succeeded and a cancelled job, both with a due time left in the row
    world.linear("quick", Step("a", lambda ctx: 1))
    done = world.submit("quick")
    world.runner.drive(done)
    cancelled = waiting_job(world, broker)
    world.jobs.cancel(cancelled)
    for job_id in (done, cancelled):
        world.pass_time(job_id)  # even with a due time left in the row
    broker.take()

    # When the reconciler runs, then it publishes neither
    assert world.reconcile() == 0
    assert broker.take() == []


def test_a_publish_that_fails_is_tried_again_within_seconds(
    world: World, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a due waiting job, and a broker that cannot store a message
    job_id = waiting_job(world, broker)
    world.pass_time(job_id)
    with broker.down():
        # When the reconciler runs
        published = world.reconcile()

    # Then it published nothing, said why, and nothing reached the broker
    assert published == 0
    assert broker.messages() == []
    assert "reconciler stopped after 0 of 1 job(s)" in caplog.text

    # And the job is due again at once: the first pass after the broker's return sends it
    assert next_run_at(world, job_id) <= utcnow()
    assert world.reconcile() == 1
    assert broker.take() == [(job_id, "jobs")]

    # And once the message is confirmed, the job is not due again before redrive_after
    assert next_run_at(world, job_id) > utcnow() + timedelta(seconds=REDRIVE - 5)


def test_reconcile_and_workers_carry_a_waiting_job_to_the_end(world: World, broker: Broker) -> None:
    # The embedded loop: reconcile, then every published message drives its job.
    def nap(ctx: StepContext) -> Any:
        return "awake" if ctx.state.get("slept") else ctx.wait(0.3, "napping", slept=True)

    # Given a job whose step naps 0.3 s
    world.linear("nap", Step("nap", nap))
    job_id = world.submit("nap")

    # When the reconciler runs and a worker drives whatever it publishes, repeatedly
    def loop() -> bool:
        world.reconcile()
        for message, _queue in broker.take():
            world.runner.drive(message)
        return status(world, job_id) == "succeeded"

    wait_until(loop, 10, "reconcile and workers to finish the nap", interval=0.05)

    # Then the job ends with the nap over
    assert world.store.describe(job_id)["result"] == "awake"


def test_a_wait_in_one_branch_comes_due_while_another_branch_runs(
    world: World, broker: Broker
) -> None:
    # Given a graph: a long step on one worker (3 s lease, renewed every second), and in a
    # parallel branch a poll that waits half a second
    entered, release = threading.Event(), threading.Event()

    def long(ctx: StepContext) -> str:
        entered.set()
        release.wait(10)
        return "long done"

    def poll(ctx: StepContext) -> Any:
        return "polled" if ctx.state.get("waited") else ctx.wait(0.5, "not yet", waited=True)

    world.linear("split", Step("long", long, after=()), Step("poll", poll, after=()))
    job_id = world.submit("split")
    broker.take()
    busy = threading.Thread(target=world.runner.drive, args=(job_id,))
    busy.start()
    try:
        assert entered.wait(5)
        world.runner.drive(job_id)  # a second worker takes the fanned-out poll: it waits
        with world.store.session() as session:
            poll_due = session.scalar(
                select(StepRow.due_at).where(StepRow.job_id == job_id, StepRow.name == "poll")
            )
        assert poll_due is not None

        # When the poll's due time has passed and the long step's heartbeat has renewed
        # its lease since (a renewal writes "now + lease")
        lease = timedelta(seconds=world.settings.lease_seconds)

        def renewed_after_due() -> bool:
            until = world.lease_until(job_id, "long")
            return until is not None and until - lease > poll_due

        wait_until(renewed_after_due, 10, "a renewal of the long step after the poll is due")

        # Then the reconciler publishes the job, and the poll runs on time
        assert world.reconcile() == 1, "the due poll waits for the long step's lease"
        assert broker.take()[-1] == (job_id, "jobs")
        world.runner.drive(job_id)
        assert world.store.describe(job_id)["steps"][1]["status"] == "succeeded"
    finally:
        release.set()
        busy.join(10)
