"""The store contract for step logs, one suite run on every backend (SQLite, PostgreSQL,
MariaDB): what a step logged is stored as it was written, numbered in order within its
job while steps of the job log at once, bounded per attempt, and deleted with its job.

Every test takes ``world`` (tests/world.py) on a freshly migrated store of one backend;
its kinds log through ``ctx.log``. Read each test as Given / When / Then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from prodinf import Step
from prodinf.engine.context import StepContext
from prodinf.engine.steplog import MAX_LINES
from prodinf.store.steplogs import STEP_LOGS, latest_lines, read_lines
from prodinf.store.submissions import delete_job
from tests.unit.workers import Background
from tests.world import World


@pytest.fixture(autouse=True)
def at_info(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO)  # as in a worker started with -l info
    yield


def messages(world: World, job_id: str, **kw: Any) -> list[str]:
    return [i["message"] for i in read_lines(world.store, job_id, limit=5000, **kw)]


def test_lines_are_stored_as_written(world: World) -> None:
    # Given a step that logs text every database must keep: accents, emoji, quotes,
    # a NUL byte, a lone surrogate, many lines in one
    written = [
        "Größe: 3 Zeilen, café, 数据库",
        "emoji 🧬 ok",
        "quotes ' \" ` and a backslash \\",
        "multi\nline\ntext",
    ]

    def talk(ctx: StepContext) -> None:
        for text in written:
            ctx.log.info("%s", text)
        ctx.log.warning("nul \x00 here")
        ctx.log.warning("surrogate \udcff here")

    world.linear("talk", Step("talk", talk))
    job_id = world.submit("talk")

    # When it runs
    assert world.drive(job_id)["status"] == "succeeded"

    # Then each line reads back as written (NUL and the surrogate spelled out)
    assert messages(world, job_id) == [
        *written,
        "nul \\x00 here",
        "surrogate \\udcff here",
    ]


def test_steps_logging_at_once_keep_every_line_numbered_in_order(world: World) -> None:
    # Given a job of two steps that run in parallel, each logging over a couple of
    # seconds (so each writes several times while the other does)
    def talk(ctx: StepContext) -> None:
        for i in range(40):
            ctx.log.info("%s %d", ctx.step, i)
            time.sleep(0.05)

    world.linear("pair", Step("left", talk, after=()), Step("right", talk, after=()))
    job_id = world.submit("pair")

    # When two workers run its steps at the same time
    other = Background(world.new_runner(), job_id)
    world.drive(job_id)
    other.join()
    world.drive(job_id)
    assert world.describe(job_id)["status"] == "succeeded"

    # Then every line of each step is there, in its order, and the numbers are unique
    items = read_lines(world.store, job_id, limit=5000)
    for step in ("left", "right"):
        assert [i["message"] for i in items if i["step"] == step] == [
            f"{step} {n}" for n in range(40)
        ]
    seqs = [i["seq"] for i in items]
    assert len(set(seqs)) == len(seqs) == 80


def test_the_bound_holds_across_runs_of_one_attempt(world: World) -> None:
    # Given a step that logs 300 lines, waits, and logs 300 more when it runs again
    def halves(ctx: StepContext) -> Any:
        run = ctx.state.get("run", 0) + 1
        for i in range(300):
            ctx.log.info("run %d line %d", run, i)
        return ctx.wait(60, "for more", run=run) if run == 1 else "done"

    world.linear("halves", Step("talk", halves))
    job_id = world.submit("halves")

    # When it runs twice in one attempt
    world.drive(job_id)
    world.pass_time(job_id)
    assert world.drive(job_id)["status"] == "succeeded"

    # Then the attempt keeps its newest lines, after a note of how many went
    kept = messages(world, job_id)
    went = 600 - (MAX_LINES - 1)
    assert len(kept) == MAX_LINES
    assert kept[0].startswith(f"[{went} earlier lines of this attempt were dropped")
    assert kept[1] == f"run 1 line {went}"
    assert kept[-1] == "run 2 line 299"
    # And the page's view of it: the newest lines of the latest attempt, and the count
    latest = latest_lines(world.store, job_id, 3)
    assert latest["talk"]["attempt"] == 1
    assert latest["talk"]["total"] == MAX_LINES
    assert [i["message"] for i in latest["talk"]["lines"]] == [
        "run 2 line 297",
        "run 2 line 298",
        "run 2 line 299",
    ]


def test_deleting_a_job_deletes_its_lines(world: World) -> None:
    # Given two jobs whose steps logged
    world.linear("one", Step("only", lambda ctx: ctx.log.info("kept")))
    gone, kept = world.submit("one"), world.submit("one")
    world.drive(gone)
    world.drive(kept)

    # When one is deleted
    delete_job(world.store, gone)

    # Then its lines are gone with it, and the other's stay
    with world.store.transaction() as conn:
        left = conn.execute(
            select(STEP_LOGS.c.job_id, func.count()).group_by(STEP_LOGS.c.job_id)
        ).all()
    assert [tuple(row) for row in left] == [(kept, 1)]
