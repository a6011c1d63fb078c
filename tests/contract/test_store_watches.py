"""The job store contract for URL watches, on every backend: one watch per URL however
many steps wait on it, looked at once per interval against a real HTTP server.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, update

from prodinf.engine.reconciler import reconcile
from prodinf.engine.watches import look_due
from prodinf.store import WatcherRow, WatchRow
from prodinf.store import watches as stored
from prodinf.store.types import utcnow
from tests.contract.lab import at_once
from tests.integration.servers import StatusServer
from tests.loopback import Loopback, Reply
from tests.world import World


def test_url_watches_are_shared_and_wake_their_steps(world: World) -> None:
    # Given five jobs waiting on one URL, and two on a URL that answers 404
    server = StatusServer()
    server.start()
    try:
        shared, missing = f"{server.base}/job/w?running=1", f"{server.base}/missing"
        jobs = world.jobs
        ids = [jobs.submit("watcher", {"url": shared})[0]["id"] for _ in range(5)]
        bad = [jobs.submit("watcher", {"url": missing})[0]["id"] for _ in range(2)]
        runner = world.runner
        for job_id in ids + bad:
            runner.drive(job_id)
        assert {world.store.describe(j)["status"] for j in ids + bad} == {"waiting"}

        def looks() -> int:
            with world.store.session() as session:
                session.execute(
                    update(WatchRow).values(next_look_at=utcnow() - timedelta(seconds=1))
                )
            return look_due(world.store)

        # When the watches are looked at: once per URL (running; 404)
        assert looks() == 2
        assert server.looked("/job/w") == 1
        # then again (complete; a second 404, which is max_errors)
        assert looks() == 2
        assert server.looked("/job/w") == 2 and server.looked("/missing") == 2
    finally:
        server.stop()

    # Then every step was woken with what its URL said, and the watches are gone
    world.published.clear()
    assert reconcile(world.store, world.publish, resend_after=10.0, redrive_after=60.0) == 7
    for job_id in ids + bad:
        runner.drive(job_id)
    results = [world.store.describe(j)["result"] for j in ids + bad]
    assert [r["outcome"] for r in results] == ["complete"] * 5 + ["failed"] * 2
    assert all(r["document"]["status"] == "complete" for r in results[:5])
    assert "answered HTTP 404" in results[5]["reason"]
    with world.store.session() as session:
        assert session.scalars(select(WatchRow)).all() == []
        assert session.scalars(select(WatcherRow)).all() == []


def test_steps_that_start_watching_one_new_url_at_once_share_one_watch(world: World) -> None:
    # Given six jobs about to watch the same URL, which nobody watches yet
    url = f"http://127.0.0.1:9/race-{uuid.uuid4().hex}"
    ids = [world.jobs.submit("watcher", {"url": url})[0]["id"] for _ in range(6)]

    # When six runners record their waits at the same instant
    at_once(6, lambda i: world.new_runner().drive(ids[i]))

    # Then every step waits, watching the one watch of that URL
    assert {world.store.describe(j)["status"] for j in ids} == {"waiting"}
    with world.store.session() as session:
        assert len(session.scalars(select(WatchRow)).all()) == 1
        assert len(session.scalars(select(WatcherRow)).all()) == 6


def test_reconcilers_claiming_at_once_claim_each_due_watch_once(world: World) -> None:
    # Given sixty watches whose looks are due
    now = utcnow()
    urls = [f"http://127.0.0.1:9/claim-{i}" for i in range(60)]
    with world.store.session() as session:
        session.add_all(
            WatchRow(
                url_key=stored.url_key(url),
                url=url,
                interval=60.0,
                next_look_at=now - timedelta(seconds=1),
                errors=0,
                status=None,
                created_at=now,
            )
            for url in urls
        )

    # When four reconcilers claim eight at a time, all at once, until none is due
    claimed: list[str] = []
    for _ in range(60):
        batches = at_once(4, lambda i: stored.claim_due(world.store, 8, 35.0))
        claimed += [watch.url for batch in batches for watch in batch]
        if not any(batches):
            break

    # Then each watch was claimed exactly once, and is held for its look
    assert sorted(claimed) == sorted(urls)
    with world.store.session() as session:
        held = session.scalars(select(WatchRow.next_look_at)).all()
    assert all(at > utcnow() + timedelta(seconds=30) for at in held)


def test_looks_that_find_urls_pending_record_each_its_own_status_and_next_look(
    world: World,
) -> None:
    # Given twelve jobs watching twelve URLs, whose servers say three different pending
    # statuses, the watches asking for intervals of one to twelve minutes
    words = ["running", "queued", "submitted"]
    with Loopback(
        lambda request: Reply(200, {"status": words[int(request.path.rsplit("-", 1)[1]) % 3]})
    ) as server:
        urls = [f"{server.base}/pending-{i}" for i in range(12)]
        for url in urls:
            world.runner.drive(world.jobs.submit("watcher", {"url": url})[0]["id"])
        with world.store.session() as session:
            for i, url in enumerate(urls):
                session.execute(
                    update(WatchRow)
                    .where(WatchRow.url == url)
                    .values(interval=60.0 * (i + 1), next_look_at=utcnow() - timedelta(seconds=1))
                )

        # When the reconciler looks at them all (recorded together)
        before = utcnow()
        assert look_due(world.store) == 12
        after = utcnow()

    # Then each watch shows what its own URL said, and its next look is its own interval
    # on (less up to a tenth of it, so watches made together drift apart)
    with world.store.session() as session:
        rows = {w.url: w for w in session.scalars(select(WatchRow))}
    for i, url in enumerate(urls):
        row, interval = rows[url], timedelta(seconds=60.0 * (i + 1))
        assert (row.status, row.errors) == (words[i % 3], 0)
        assert before + interval * 0.9 <= row.next_look_at <= after + interval
