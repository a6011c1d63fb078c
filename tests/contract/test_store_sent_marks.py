"""The job store contract for a confirmed message's mark, on every backend (SQLite,
PostgreSQL, MariaDB): the only write that does not wait for the disk.

Once the broker confirms a job's message, the job's ``next_run_at`` moves from "due
again soon" to "due after redrive_after". Losing that move in a crash costs nothing but
a message sent again, so on PostgreSQL it commits on its own without waiting for its
WAL to reach the disk (one round trip, no fsync); every transition of a job still
waits. Read each test as Given / When / Then.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, text

from prodinf.store.due import mark_sent
from prodinf.store.models import JOBS
from prodinf.store.types import utcnow
from tests.world import World


def test_a_mark_moves_the_job_and_every_reader_sees_it_at_once(world: World) -> None:
    # Given a job whose message was sent, due again soon until the mark
    job_id = world.submit("plain", {"payload": 1})
    with world.store.transaction() as conn:
        due = conn.scalar(select(JOBS.c.next_run_at).where(JOBS.c.id == job_id))
    later = utcnow() + timedelta(minutes=5)

    # When the message is marked sent, twice (the second finds it moved already)
    moved = mark_sent(world.store, [job_id], due, later)
    again = mark_sent(world.store, [job_id], due, later)

    # Then the job is due only later, as a new transaction reads it, and once only
    with world.store.transaction() as conn:
        now_due = conn.scalar(select(JOBS.c.next_run_at).where(JOBS.c.id == job_id))
    assert (moved, again) == (1, 0)
    assert abs((now_due - later).total_seconds()) < 0.001


def test_only_the_mark_skips_the_wait_for_the_disk(world: World) -> None:
    # Given the store's two ways to write
    store = world.store
    if store.dialect != "postgresql":
        with store.unhurried() as conn:  # elsewhere, a transaction like the others
            assert conn.in_transaction()
        return

    # Then a mark commits without waiting for the disk, and a transition waits
    with store.unhurried() as conn:
        assert conn.scalar(text("SHOW synchronous_commit")) == "off"
        assert conn.connection.driver_connection.autocommit  # it commits on its own
    with store.transaction() as conn:
        assert conn.scalar(text("SHOW synchronous_commit")) == "on"
