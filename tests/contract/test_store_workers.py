"""The job store contract for worker presence, on every backend: a worker's row is
written once however often it reports, counts while recent, and goes as it stops."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from prodinf.store import JobStore
from prodinf.store import workers as present
from prodinf.store.models import WORKERS
from prodinf.store.types import utcnow


def test_a_worker_is_seen_while_it_reports_and_gone_when_it_stops(any_store: JobStore) -> None:
    started = utcnow()
    # Given two workers reporting, one of them twice (its queues changed meanwhile)
    present.seen(any_store, "email@host-a", ["email", "email.due"], 101, started)
    present.seen(any_store, "jobs@host-a", ["jobs"], 102, started)
    present.seen(any_store, "email@host-a", ["email", "email.due", "extra"], 103, started)

    # Then each is one row, with what it said last
    running = present.recent(any_store)
    assert [(w.name, w.queues, w.pid) for w in running] == [
        ("email@host-a", ["email", "email.due", "extra"], 103),
        ("jobs@host-a", ["jobs"], 102),
    ]
    assert running[0].started_at == started

    # When one has not reported for longer than SEEN_WITHIN, it no longer counts
    with any_store.transaction() as conn:
        conn.execute(
            update(WORKERS)
            .where(WORKERS.c.name == "jobs@host-a")
            .values(seen_at=utcnow() - timedelta(seconds=present.SEEN_WITHIN + 1))
        )
    assert [w.name for w in present.recent(any_store)] == ["email@host-a"]

    # When the other stops, it is gone
    present.forget(any_store, "email@host-a")
    assert present.recent(any_store) == []
    assert [w.name for w in present.recent(any_store, within=3600)] == ["jobs@host-a"]
