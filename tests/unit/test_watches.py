"""Shared URL watches: many ``email_when_complete`` jobs on one URL cost one look per interval.

The engine runs for real on a SQLite store (the ``world``) against a real HTTP
status server on 127.0.0.1; mail goes to the embedded outbox. Time passes by
moving ``next_look_at`` into the past, as the clock would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, update

import prodinf.kinds  # noqa: F401  (registers email_when_complete)
from prodinf.config import Settings
from prodinf.engine.reconciler import reconcile
from prodinf.engine.registry import registry
from prodinf.engine.watches import look_due
from prodinf.mail import outbox_dir
from prodinf.store import StepRow, WatcherRow, WatchRow
from prodinf.store.types import utcnow
from tests.integration.servers import StatusServer
from tests.loopback import Answer, Loopback, Reply, Request
from tests.waiting import wait_until
from tests.world import World


@pytest.fixture
def notify(world: World) -> World:
    world.registry.register(registry.get("email_when_complete"))
    return world


def submit(world: World, url: str, n: int = 1, **params: object) -> list[str]:
    ids = [
        world.submit("email_when_complete", {"url": url, "address": f"u{i}@example.org", **params})
        for i in range(n)
    ]
    for job_id in ids:
        assert world.drive(job_id)["status"] == "waiting"
    return ids


def watches(world: World) -> list[WatchRow]:
    with world.store.session() as session:
        rows = list(session.scalars(select(WatchRow)))
        session.expunge_all()
        return rows


def watchers(world: World) -> int:
    with world.store.session() as session:
        return int(session.scalar(select(func.count()).select_from(WatcherRow)) or 0)


def time_passes(world: World) -> None:
    """Every watch's next look comes due."""
    with world.store.session() as session:
        session.execute(update(WatchRow).values(next_look_at=utcnow() - timedelta(seconds=1)))


def woken(world: World, ids: list[str]) -> int:
    with world.store.session() as session:
        steps = session.scalars(
            select(StepRow).where(StepRow.job_id.in_(ids), StepRow.name == "watch")
        ).all()
        return sum(1 for s in steps if "watched" in (s.state or {}))


def test_fifty_notifications_on_one_url_share_one_look_per_interval(
    notify: World, settings: Settings, status: StatusServer
) -> None:
    # Given fifty notifications on one URL, each having made its first look
    path = "/job/shared"
    ids = submit(notify, f"{status.base}{path}?running=51", 50, interval=60)
    assert status.looked(path) == 50  # each made its own first look
    (watch,) = watches(notify)
    assert watchers(notify) == 50
    assert watch.interval == 60

    # When an interval passes, then one look serves all fifty (still running)
    assert look_due(notify.store) == 0  # not due for another minute
    time_passes(notify)
    assert look_due(notify.store) == 1
    assert status.looked(path) == 51  # one look for all fifty: still running
    assert watches(notify)[0].status == "running"
    assert woken(notify, ids) == 0
    assert look_due(notify.store) == 0  # the next look is an interval away

    # When another passes and the URL reports complete, then all fifty are woken
    time_passes(notify)
    assert look_due(notify.store) == 1
    assert status.looked(path) == 52  # complete
    assert woken(notify, ids) == 50
    assert watches(notify) == [] and watchers(notify) == 0

    # And the reconciler publishes them, and each mails its result
    notify.published.clear()
    reconcile(notify.store, notify.publish, resend_after=10.0, redrive_after=30.0)
    assert sorted(job for job, _ in notify.published) == sorted(ids)
    for job_id in ids:
        detail = notify.drive(job_id)
        assert detail["status"] == "succeeded", detail["error"]
        assert detail["result"]["outcome"] == "complete"
    assert len(list(outbox_dir(settings).glob("*.eml"))) == 50
    assert status.looked(path) == 52  # nobody looked again


def test_a_url_that_keeps_failing_wakes_its_watchers_after_max_errors(
    notify: World, status: StatusServer
) -> None:
    # Given a notification on a URL that answers 404, at most 3 errors
    (job_id,) = submit(notify, f"{status.base}/missing", max_errors=3, interval=1)
    (watch,) = watches(notify)
    assert watch.errors == 1  # the first look failed

    # When it has failed three looks in a row
    for errors in (2, 3):
        time_passes(notify)
        look_due(notify.store)
        assert status.looked("/missing") == errors

    # Then its watcher is woken and the watch dropped; the job ends saying why
    assert woken(notify, [job_id]) == 1
    assert watches(notify) == []
    notify.pass_time(job_id)
    detail = notify.drive(job_id)
    assert detail["status"] == "succeeded"
    assert detail["result"]["outcome"] == "failed"
    assert "gave up after 3 failed looks" in notify.step(job_id, "watch")["output"]["reason"]


def test_failed_looks_back_off(notify: World, status: StatusServer) -> None:
    # Given a watch whose first look (at submit) failed, every 10 s
    submit(notify, f"{status.base}/missing", max_errors=10, interval=10)
    time_passes(notify)

    # When its next look fails too: the second failure in a row
    before = utcnow()
    look_due(notify.store)
    after = utcnow()

    # Then the look after it is twice the interval (20 s) from when it failed
    (watch,) = watches(notify)
    assert watch.errors == 2
    assert before + timedelta(seconds=20) <= watch.next_look_at <= after + timedelta(seconds=20)


def test_a_cancelled_notification_stops_being_watched(notify: World, status: StatusServer) -> None:
    # Given a notification watching a URL, when it is cancelled
    (job_id,) = submit(notify, f"{status.base}/never")
    notify.jobs.cancel(job_id)

    # Then the next look drops its watcher and the watch
    time_passes(notify)
    look_due(notify.store)
    assert watchers(notify) == 0
    assert watches(notify) == []


def test_the_shortest_interval_asked_for_wins(notify: World, status: StatusServer) -> None:
    # Given two notifications on one URL, every 10 minutes and every 30 s
    submit(notify, f"{status.base}/never", interval=600)
    submit(notify, f"{status.base}/never", interval=30)

    # Then the watch looks every 30 s, the next look within that
    (watch,) = watches(notify)
    assert watch.interval == 30
    assert (watch.next_look_at - utcnow()).total_seconds() < 31


def test_a_notification_past_its_deadline_is_mailed_without_the_watch(
    notify: World, settings: Settings, status: StatusServer
) -> None:
    # Given a notification with a 5 s deadline, watching a URL that never ends
    (job_id,) = submit(notify, f"{status.base}/never", deadline=5)

    # When the deadline has passed and it runs
    notify.pass_time(job_id)  # the deadline passes before the URL finishes
    with notify.store.session() as session:  # as the clock would have it
        step = session.scalars(
            select(StepRow).where(StepRow.job_id == job_id, StepRow.name == "watch")
        ).one()
        step.state = {**step.state, "since": step.state["since"] - 10}
    detail = notify.drive(job_id)

    # Then it reports the deadline with the last status seen
    assert detail["result"]["outcome"] == "deadline"
    assert detail["result"]["status"] == "running"

    # And the next look drops the watcher and the watch
    time_passes(notify)
    look_due(notify.store)
    assert watches(notify) == []  # the next look dropped the watcher and the watch


def test_looks_are_claimed_a_few_at_a_time(
    notify: World, http_server: Callable[[Answer], Loopback]
) -> None:
    # Given twelve notifications on twelve URLs that answer "running" once, then hang
    release = threading.Event()
    seen: dict[str, int] = {}

    def answer(request: Request) -> Reply:
        seen[request.path] = seen.get(request.path, 0) + 1
        if seen[request.path] > 1:
            release.wait(10)
        return Reply(200, {"status": "running"})

    server = http_server(answer)
    for i in range(12):
        submit(notify, f"{server.base}/job/{i}")
    time_passes(notify)

    # When a reconciler looks with four looks at a time, and they hang
    looking = threading.Thread(target=look_due, args=(notify.store,), kwargs={"parallel": 4})
    looking.start()
    try:
        wait_until(lambda: sum(seen.values()) >= 16, 10, "four looks in flight")

        # Then only those four watches are claimed: a reconciler killed now would hold
        # up four watches for CLAIM_SECONDS, not every due one
        claimed = [w for w in watches(notify) if w.next_look_at > utcnow()]
        assert len(claimed) == 4
    finally:
        release.set()
        looking.join(30)
    assert sum(seen.values()) == 24  # and every due watch was looked at in the pass


def test_the_job_shows_its_next_look_not_its_deadline(notify: World, status: StatusServer) -> None:
    """Given a notification waiting on a URL looked at every 30 s (7 days at most),
    then the job and its step show the next look, half a minute away; the deadline is
    shown apart, as what the job waits at most until."""
    [job_id] = submit(notify, f"{status.base}/job/slow?running=5", interval=30)

    detail = notify.describe(job_id)
    next_look = datetime.fromisoformat(detail["next_look_at"])
    assert 25 <= (next_look - utcnow()).total_seconds() <= 30
    assert notify.step(job_id, "watch")["next_look_at"] == detail["next_look_at"]
    deadline = datetime.fromisoformat(detail["next_run_at"])
    assert (deadline - utcnow()).days == 6  # 7 days from the first look, less a moment

    with notify.store.session() as session:  # a reconciler's look moves the next one on
        session.execute(update(WatchRow).values(next_look_at=utcnow() + timedelta(seconds=5)))
    assert (
        0
        < (
            datetime.fromisoformat(notify.describe(job_id)["next_look_at"]) - utcnow()
        ).total_seconds()
        <= 5
    )
