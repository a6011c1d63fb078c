"""The queues a prodinf app declares: each queue and its lane, classic or quorum."""

from __future__ import annotations

from pathlib import Path

from prodinf.celery_app import DELIVERY_LIMIT, EXCHANGE, create_celery
from prodinf.config import Settings


def declared(settings: Settings) -> dict[str, dict[str, object]]:
    """Each queue the app declares, with the arguments RabbitMQ gets for it."""
    app = create_celery(settings)
    found = {}
    for q in app.conf.task_queues:
        args = dict(q.queue_arguments or {})
        if q.max_priority is not None:
            args["x-max-priority"] = q.max_priority
        found[q.name] = args
    return found


def test_classic_queues_each_have_a_lane(home: Path) -> None:
    # Given the default (classic) queue type
    queues = declared(Settings(home=home))

    # Then every queue and its lane are declared, as classic queues always were
    assert sorted(queues) == sorted(
        n for q in ("handover", "event", "email", "jobs") for n in (q, f"{q}.due")
    )
    assert all(args == {"x-max-priority": 5} for args in queues.values())


def test_quorum_queues_have_a_delivery_limit_and_dead_letters(home: Path) -> None:
    # Given PRODINF_QUEUE_TYPE=quorum
    queues = declared(Settings(home=home, queue_type="quorum"))

    # Then every queue and lane is a quorum queue without priorities, whose messages
    # delivered DELIVERY_LIMIT times go to jobs.dead, which is declared too
    dead = queues.pop("jobs.dead")
    assert dead == {"x-queue-type": "quorum"}
    assert len(queues) == 8
    for args in queues.values():
        assert args == {
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": EXCHANGE,
            "x-dead-letter-routing-key": "jobs.dead",
        }
