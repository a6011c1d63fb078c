"""A runner's transitions on every backend, where PostgreSQL writes them ahead.

On PostgreSQL a runner records a step's outcome and claims the next step in one
statement, on the rows as its own last transaction left them, written only if no row
of the job was written since (``JobRows.save_unless_changed``); otherwise, and on the
other stores always, it locks and reads the rows first. Either way what another
writer did between two steps is never overwritten, and a step reads the output of
the one before as the store gives it back. Read each test as Given / When / Then.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from prodinf import Step
from prodinf.store import JobRow, StepRow
from prodinf.store.models import HISTORY
from prodinf.store.rows import JobRows
from tests.contract.lab import Lab
from tests.world import World


def test_a_cancel_asked_while_a_step_runs_stops_the_job_before_its_next_step(
    world: World, lab: Lab
) -> None:
    # Given a job a -> b -> c, and a user who cancels it while b runs (after a
    # transition the runner may write without reading the rows again)
    lab.during["b"] = lambda job_id: world.jobs.cancel(job_id, actor="alice")
    job_id = world.submit("plain")

    # When a worker drives it
    job = world.drive(job_id)

    # Then b ran to its end, c never ran, and the job is cancelled, as asked
    assert lab.done(job_id) == [("run", "a"), ("run", "b")]
    assert job["status"] == "cancelled"
    assert world.steps(job_id) == {"a": "succeeded", "b": "succeeded", "c": "cancelled"}


def test_a_step_reads_the_output_of_the_one_before_as_stored(world: World) -> None:
    # Given a step that returns a tuple and a number as a key (JSON has neither),
    # and a next step that keeps what it was given
    seen: list[Any] = []
    world.linear(
        "shapes",
        Step("make", lambda ctx: {"pair": (1, 2), 3: "three"}),
        Step("read", lambda ctx: seen.append(ctx.outputs["make"])),
    )

    # When a worker runs the job
    world.drive(world.submit("shapes"))

    # Then the next step read it as the store holds it: a list, a string key
    assert seen == [{"pair": [1, 2], "3": "three"}]
    assert type(seen[0]["pair"]) is list


def _noted(world: World, job_id: str) -> list[str | None]:
    with world.store.session() as session:
        return list(
            session.scalars(
                select(HISTORY.c.message)
                .where(HISTORY.c.job_id == job_id, HISTORY.c.event == "test.noted")
                .order_by(HISTORY.c.id)
            )
        )


def test_rows_are_written_ahead_only_as_they_were_left(world: World) -> None:
    # Given a job's rows as a transaction wrote and left them
    job_id = world.submit("plain")
    with world.store.transaction() as conn:
        rows = JobRows.lock(conn, job_id)
        assert rows is not None
        rows.job.progress_message = "first"
        rows.note("test.noted", None, "first")
        rows.save(conn)
    ahead = rows.resumed()
    if world.store.dialect != "postgresql":
        # Then elsewhere they are never written ahead: every transition reads them
        assert ahead is None
        return
    assert ahead is not None

    # When another writer changes the job row, and then the rows are written ahead
    with world.store.session() as session:
        session.execute(update(JobRow).where(JobRow.id == job_id).values(progress_message="theirs"))
    ahead.job.progress_message = "second"
    ahead.note("test.noted", None, "second")

    # Then nothing is written: their change stands, and no history entry is added
    assert ahead.save_unless_changed(world.store) is False
    assert world.describe(job_id)["progress"]["message"] == "theirs"
    assert _noted(world, job_id) == ["first"]

    # When the rows are locked and written again, and then written ahead twice
    with world.store.transaction() as conn:
        rows = JobRows.lock(conn, job_id)
        assert rows is not None and rows.job.progress_message == "theirs"
        rows.job.progress_message = "third"
        rows.save(conn)
    for message in ("fourth", "fifth"):
        ahead = rows.resumed()
        assert ahead is not None
        ahead.job.progress_message = message
        ahead.note("test.noted", None, message)

        # Then each is written, with its history entry
        assert ahead.save_unless_changed(world.store) is True
        rows = ahead
    assert world.describe(job_id)["progress"]["message"] == "fifth"
    assert _noted(world, job_id) == ["first", "fourth", "fifth"]

    # When another writer changes a step row only, and the rows are written ahead
    with world.store.session() as session:
        session.execute(
            update(StepRow)
            .where(StepRow.job_id == job_id, StepRow.name == "c")
            .values(state={"theirs": True})
        )
    ahead = rows.resumed()
    assert ahead is not None
    ahead.job.progress_message = "sixth"
    ahead.steps[2].state = {"mine": True}

    # Then nothing is written either: the step keeps their state
    assert ahead.save_unless_changed(world.store) is False
    assert world.describe(job_id)["progress"]["message"] == "fifth"
    with world.store.session() as session:
        state = session.scalar(
            select(StepRow.state).where(StepRow.job_id == job_id, StepRow.name == "c")
        )
    assert state == {"theirs": True}
