"""A job whose message may be missing is sent again within seconds, whatever failed.

The store is SQLite; messages go to the real embedded broker through prodinf's
``Runtime`` (``tests/broker.py``), which is made to refuse them for real
(``broker.down()``). A process killed between commit and publish is what a job
committed and never sent leaves behind: its rows, written as a submission writes
them, and no message.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy import select

from prodinf import Step
from prodinf.config import Settings
from prodinf.engine.newjob import new_job
from prodinf.exceptions import BrokerUnavailable
from prodinf.runtime import Runtime, lane, logical_queues
from prodinf.store import JobRow
from prodinf.store.submissions import insert_job
from prodinf.store.types import utcnow
from tests.broker import Broker
from tests.unit.workers import fail_for_good
from tests.world import World

RESEND = 10.0
REDRIVE = 30.0


@pytest.fixture
def world(settings: Settings, broker: Broker) -> Iterator[World]:
    """The engine on SQLite, publishing to the real embedded broker."""
    w = World(settings, publish=broker.publish)
    w.linear("plain", Step("only", lambda ctx: "done"))
    yield w
    w.close()


def next_run_at(world: World, job_id: str) -> datetime:
    with world.store.session() as session:
        when = session.scalar(select(JobRow.next_run_at).where(JobRow.id == job_id))
    assert when is not None
    return when


def committed_never_sent(world: World, kind: str = "plain") -> str:
    """What a portal killed between its commit and its publish leaves: the job's rows."""
    spec = world.registry.get(kind)
    params = spec.validate({})
    new = new_job(spec, {}, spec.flow(params), world.settings, utcnow(), idempotency_key="k-1")
    insert_job(world.store, new)
    return new.id


def committed_never_sent_any(world: World) -> str:
    """A job committed and never sent, with a key of its own."""
    spec = world.registry.get("plain")
    new = new_job(spec, {}, spec.flow(spec.validate({})), world.settings, utcnow())
    insert_job(world.store, new)
    return new.id


def seconds_ahead(when: datetime) -> float:
    return (when - utcnow()).total_seconds()


def test_a_job_is_due_within_resend_after_until_its_message_is_confirmed(
    world: World, broker: Broker
) -> None:
    # Given a job committed by a process that died before sending its message
    job_id = committed_never_sent(world)

    # Then it is due again within resend_after, not redrive_after
    assert 0 < seconds_ahead(next_run_at(world, job_id)) <= RESEND

    # And when that time has passed, the reconciler sends it (and only it)
    world.pass_time(job_id)
    assert world.reconcile(redrive_after=REDRIVE) == 1
    assert broker.take() == [(job_id, "jobs")]

    # And once its message is confirmed it is not due before redrive_after
    assert seconds_ahead(next_run_at(world, job_id)) > REDRIVE - 5


def test_a_submitted_job_whose_message_is_confirmed_is_due_only_after_redrive_after(
    world: World, broker: Broker
) -> None:
    # When a job is submitted and the broker confirms its message
    job_id = world.submit("plain")

    # Then one message is out, and the job is not due again before redrive_after
    assert broker.take() == [(job_id, "jobs")]
    assert seconds_ahead(next_run_at(world, job_id)) > REDRIVE - 5
    assert world.reconcile() == 0


def test_replaying_the_key_of_a_job_never_sent_sends_it(world: World, broker: Broker) -> None:
    # Given a job committed and never sent (the portal died between the two)
    job_id = committed_never_sent(world)
    assert broker.messages() == []

    # When the client retries with the same idempotency key
    summary, created = world.jobs.submit("plain", {}, idempotency_key="k-1")

    # Then it is told about the job, and the job's message is in the broker now
    assert (summary["id"], created) == (job_id, False)
    assert broker.take() == [(job_id, "jobs")]
    assert seconds_ahead(next_run_at(world, job_id)) > REDRIVE - 5


def test_replaying_a_key_while_the_broker_is_down_answers_broker_unavailable(
    world: World, broker: Broker
) -> None:
    # Given a job committed and never sent
    job_id = committed_never_sent(world)

    # When the client retries with the same key while the broker refuses messages
    with broker.down(), pytest.raises(BrokerUnavailable):
        world.jobs.submit("plain", {}, idempotency_key="k-1")

    # Then the job is kept, due again within resend_after, and a later retry sends it
    assert 0 < seconds_ahead(next_run_at(world, job_id)) <= RESEND
    world.jobs.submit("plain", {}, idempotency_key="k-1")
    assert broker.take() == [(job_id, "jobs")]


def test_a_retry_whose_publish_fails_is_sent_within_resend_after(
    world: World, broker: Broker
) -> None:
    # Given a failed job
    world.linear("fails", Step("only", fail_for_good))
    job_id = world.submit("fails")
    world.drive(job_id)
    broker.take()
    assert world.describe(job_id)["status"] == "failed"

    # When it is retried while the broker refuses messages
    with broker.down(), pytest.raises(BrokerUnavailable):
        world.jobs.retry(job_id)

    # Then it is queued in the store and due again within resend_after
    assert world.describe(job_id)["status"] == "queued"
    assert 0 < seconds_ahead(next_run_at(world, job_id)) <= RESEND
    world.pass_time(job_id)
    assert world.reconcile() == 1
    assert broker.take() == [(job_id, "jobs")]


def test_a_pass_sends_at_most_its_batch_earliest_due_first(world: World, broker: Broker) -> None:
    # Given five jobs never sent, all due, the first the longest
    jobs = []
    for _ in range(5):
        jobs.append(committed_never_sent_any(world))
        world.pass_time(jobs[-1])

    # When passes run with a batch of two
    batches = []
    for _ in range(4):
        world.reconcile(limit=2)
        batches.append({job for job, _ in broker.take()})

    # Then each pass sent two at most, all five went out once, in the order they came due
    assert batches == [set(jobs[:2]), set(jobs[2:4]), set(jobs[4:]), set()]


def test_a_pass_stops_at_the_first_refusal_and_the_rest_stay_due_soon(
    world: World, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    # Given three due jobs, and a broker that takes the first message and refuses the next
    jobs = []
    for _ in range(3):
        jobs.append(committed_never_sent_any(world))
        world.pass_time(jobs[-1])
    taken: list[str] = []

    def first_only(job_id: str, queue: str) -> None:
        if taken:
            raise BrokerUnavailable("broker unavailable: refused for the test")
        taken.append(job_id)
        broker.publish(job_id, queue)

    world.publish = first_only

    # When the reconciler runs
    sent = world.reconcile()

    # Then it sent one, tried no further, said so, and the other two are due now again,
    # for the next pass to send once the broker takes messages
    assert sent == 1
    assert "reconciler stopped after 1 of 3 job(s)" in caplog.text
    assert [job for job, _ in broker.take()] == jobs[:1]
    for job_id in jobs[1:]:
        assert seconds_ahead(next_run_at(world, job_id)) <= 0
    world.publish = broker.publish
    assert world.reconcile() == 2
    assert {job for job, _ in broker.take()} == set(jobs[1:])


def test_lanes_are_named_after_their_queue() -> None:
    # Then each queue's lane is "<queue>.due", and lanes and dead letters map back
    assert lane("jobs") == "jobs.due"
    assert lane("jobs.due") == "jobs.due"
    assert logical_queues(["jobs", "jobs.due", "email.due", "jobs.dead"]) == ["jobs", "email"]


def test_the_runtime_sends_the_reconcilers_messages_on_the_lanes(
    world: World, settings: Settings, broker: Broker
) -> None:
    # Given a runtime on the embedded broker (and the world's migrated store), and a job
    runtime = Runtime(settings, broker.runtime.celery)
    job_id = runtime.jobs.submit("http_get", {"url": "http://127.0.0.1:9/"})[0]["id"]
    assert broker.take() == [(job_id, "jobs")]
    world.pass_time(job_id)

    # When the runtime reconciles its queues, named as a worker consumes them
    sent = runtime.reconcile(["jobs", "jobs.due"])

    # Then the job went out on the jobs lane
    assert sent == 1
    assert broker.take() == [(job_id, "jobs.due")]
    runtime.close()
