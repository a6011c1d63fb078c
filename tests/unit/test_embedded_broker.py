"""The embedded broker as the tests use it (tests/broker.py): what ``messages`` reads is
what a worker consumes, and ``down()`` is a real failure that prodinf reports.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from prodinf.config import Settings
from prodinf.exceptions import BrokerUnavailable
from prodinf.runtime import RUN_JOB
from tests.broker import Broker


def test_a_published_message_is_what_a_worker_would_consume(broker: Broker) -> None:
    # Given run messages published through prodinf's Runtime to two queues
    broker.publish("job-1", "jobs")
    broker.publish("job-2", "email")

    # When the tests read the broker, and when a kombu consumer takes from the jobs queue
    held = sorted(broker.messages())
    with broker.runtime.celery.connection_for_read() as conn:
        message = conn.default_channel.basic_get("jobs", no_ack=True)

    # Then both see the message: a run_job task for the job, on its queue
    assert held == [("job-1", "jobs"), ("job-2", "email")]
    assert message is not None
    assert message.headers["task"] == RUN_JOB
    assert message.decode()[0] == ["job-1"]
    assert broker.messages() == [("job-2", "email")]


def test_a_broker_that_is_down_refuses_and_keeps_what_it_held(broker: Broker) -> None:
    # Given a broker holding one message
    broker.publish("job-1", "jobs")

    # When it cannot store a message
    with broker.down(), pytest.raises(BrokerUnavailable) as caught:
        broker.publish("job-2", "jobs")

    # Then publishing says so, and once it is back it still holds the first message
    # and takes new ones
    assert "broker unavailable" in str(caught.value)
    assert broker.messages() == [("job-1", "jobs")]
    broker.publish("job-3", "jobs")
    assert sorted(broker.take()) == [("job-1", "jobs"), ("job-3", "jobs")]
    assert broker.messages() == []


def test_publishing_a_run_message_never_touches_the_result_backend(home: Path) -> None:
    # Given a runtime whose Celery result backend is a database that does not answer
    settings = Settings(home=home, result_backend="db+postgresql+psycopg://nobody@127.0.0.1:9/x")
    broker = Broker(settings)
    try:
        # When run messages are published, from several threads as the portal does
        threads = [
            threading.Thread(target=broker.publish, args=(f"job-{i}", "jobs")) for i in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)

        # Then all three are in the broker: no result backend was built to send them (a
        # store outage cannot turn a publish into an error)
        assert sorted(broker.messages()) == [(f"job-{i}", "jobs") for i in range(3)]
    finally:
        broker.close()


def test_a_message_is_never_read_half_written(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a worker reading the queue while a message is being written (kombu's own
    transport wrote it in place, where a reader could take it half-written and stop with
    a JSONDecodeError), then until the message is whole the reader finds nothing, and
    then it finds all of it."""
    import prodinf.embedded_broker as embedded

    seen_while_writing: list[object] = []
    rename = embedded.os.replace

    def look_then_rename(partial: str, final: str) -> None:
        # the message's bytes are on disk under their partial name: a reader now...
        with broker.runtime.celery.connection_for_read() as conn:
            seen_while_writing.append(conn.default_channel.basic_get("jobs", no_ack=True))
        rename(partial, final)

    monkeypatch.setattr(embedded.os, "replace", look_then_rename)
    broker.publish("job-1", "jobs")

    assert seen_while_writing == [None]  # ...found nothing
    with broker.runtime.celery.connection_for_read() as conn:
        message = conn.default_channel.basic_get("jobs", no_ack=True)
    assert message is not None and message.decode()[0] == ["job-1"]


def test_readers_racing_for_a_deep_queue_take_each_message_once_oldest_first(
    broker: Broker,
) -> None:
    """Given 200 messages on two queues, when four readers take from the jobs queue at
    once (kombu's reader moves a message out of the folder before reading it, which one
    reader alone wins), then every jobs message is taken exactly once, a lone reader
    takes them in the order they were sent, and the other queue's messages are all
    still there."""
    for i in range(200):
        broker.publish(f"job-{i}", "jobs" if i % 2 == 0 else "email")
    taken: list[str] = []

    def read(count: int) -> None:
        with broker.runtime.celery.connection_for_read() as conn:
            for _ in range(count):
                message = conn.default_channel.basic_get("jobs", no_ack=True)
                if message is not None:
                    taken.append(message.decode()[0][0])

    threads = [threading.Thread(target=read, args=(20,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    read(100)  # what the racers left, alone: in sending order

    evens = [f"job-{i}" for i in range(0, 200, 2)]
    assert sorted(taken) == sorted(evens)  # each exactly once
    assert taken[80:] == evens[80:]
    assert sorted(broker.messages()) == sorted((f"job-{i}", "email") for i in range(1, 200, 2))
