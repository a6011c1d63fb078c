"""What a step logs is kept with its attempt: through ``ctx.log`` and the ``logging`` module.

The engine runs for real on a SQLite store (the ``world``, tests/world.py); each test
registers a small kind whose step logs, drives it as a worker's task would, and reads
the lines back as the API, the page and ``prodinf logs`` do (``read_lines``). The root
logger is at INFO, as a worker started with ``-l info`` (the default) has it.
Read each test as Given / When / Then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from prodinf import Retry, Step
from prodinf.engine.context import StepContext
from prodinf.engine.steplog import MAX_BYTES, MAX_LINES
from prodinf.exceptions import TransientError
from prodinf.store.steplogs import read_lines
from tests.unit.workers import Background, Gate
from tests.waiting import wait_until
from tests.world import World

PASSWORD = "hunter2-Secret"


@pytest.fixture(autouse=True)
def at_info(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The root logger at INFO, as in a worker; ``caplog`` sees what a console would."""
    caplog.set_level(logging.INFO)
    yield caplog


def lines(world: World, job_id: str, **kw: Any) -> list[dict[str, Any]]:
    return read_lines(world.store, job_id, limit=5000, **kw)


def said(world: World, job_id: str, **kw: Any) -> list[tuple[str, int, str, str, str]]:
    """(step, attempt, level, logger, message) of each line, oldest first."""
    return [
        (i["step"], i["attempt"], i["level"], i["logger"], i["message"])
        for i in lines(world, job_id, **kw)
    ]


# -- what is kept ------------------------------------------------------------------------------


def test_ctx_log_and_the_logging_module_are_kept_with_the_step(world: World) -> None:
    # Given a kind whose steps log through ctx.log and through a library's logger
    def copy(ctx: StepContext) -> int:
        ctx.log.info("copied %d rows", 3)
        logging.getLogger("mylib.copier").warning("table %s is empty", "meta")
        logging.getLogger("mylib.copier").debug("not kept: below INFO")
        return 3

    def check(ctx: StepContext) -> str:
        ctx.log.error("found %d problems", 2)
        return "ok"

    world.linear("copy_rows", Step("copy", copy), Step("check", check))
    job_id = world.submit("copy_rows")

    # When a worker runs it
    assert world.drive(job_id)["status"] == "succeeded"

    # Then each line is kept with its step and attempt, in order, at its level
    assert said(world, job_id) == [
        ("copy", 1, "INFO", "prodinf.steps.copy_rows", "copied 3 rows"),
        ("copy", 1, "WARNING", "mylib.copier", "table meta is empty"),
        ("check", 1, "ERROR", "prodinf.steps.copy_rows", "found 2 problems"),
    ]
    # And one step's lines can be read alone, after a seq, a page at a time
    assert [m for *_, m in said(world, job_id, step="check")] == ["found 2 problems"]
    first = lines(world, job_id)[0]["seq"]
    assert [m for *_, m in said(world, job_id, after=first)] == [
        "table meta is empty",
        "found 2 problems",
    ]
    assert len(read_lines(world.store, job_id, limit=1)) == 1


def test_each_attempt_keeps_its_own_lines(world: World) -> None:
    # Given a step that logs, then fails once with a transient error
    def flaky(ctx: StepContext) -> str:
        ctx.log.info("try %d", ctx.attempt)
        if ctx.attempt == 1:
            raise TransientError("service busy")
        return "done"

    world.linear("flaky", Step("fetch", flaky, retry=Retry(attempts=2, backoff=0, jitter=0)))
    job_id = world.submit("flaky")

    # When it runs, fails, and runs again
    world.drive(job_id)
    world.pass_time(job_id)
    assert world.drive(job_id)["status"] == "succeeded"

    # Then each attempt has its line
    assert said(world, job_id) == [
        ("fetch", 1, "INFO", "prodinf.steps.flaky", "try 1"),
        ("fetch", 2, "INFO", "prodinf.steps.flaky", "try 2"),
    ]
    assert [m for *_, m in said(world, job_id, attempt=2)] == ["try 2"]


def test_a_traceback_logged_with_exception_is_kept(world: World) -> None:
    def step(ctx: StepContext) -> None:
        try:
            {}["missing"]
        except KeyError:
            ctx.log.exception("lookup failed")

    world.linear("tb", Step("look", step))
    job_id = world.submit("tb")
    world.drive(job_id)

    (line,) = lines(world, job_id)
    assert line["level"] == "ERROR"
    assert line["message"].startswith("lookup failed\nTraceback (most recent call last):")
    assert "KeyError: 'missing'" in line["message"]


def test_what_is_logged_outside_a_step_is_not_kept(world: World) -> None:
    # Given a step that logs, and lines logged by the test before and after it
    world.linear("one", Step("only", lambda ctx: ctx.log.info("inside")))
    job_id = world.submit("one")
    logging.getLogger("mylib").warning("before")

    world.drive(job_id)
    logging.getLogger("mylib").warning("after")

    # Then only the step's line is the step's
    assert [m for *_, m in said(world, job_id)] == ["inside"]


# -- masked ------------------------------------------------------------------------------------


class Connect(BaseModel):
    src_uri: str
    password: str


def test_credentials_and_secret_params_are_masked(
    world: World, at_info: pytest.LogCaptureFixture
) -> None:
    # Given a kind with a password param and a URI with credentials, whose step echoes both
    def connect(ctx: StepContext) -> None:
        params: Connect = ctx.params  # type: ignore[assignment]
        ctx.log.info("connecting to %s", params.src_uri)
        ctx.log.info("logging in with %s", params.password)
        logging.getLogger("driver").warning("auth: user=app password=%s", params.password)
        logging.getLogger("driver").warning("the uri's password alone: uri-Pw-77")

    world.linear("connect", Step("connect", connect), params=Connect)
    job_id = world.submit(
        "connect", {"src_uri": "mysql://app:uri-Pw-77@db.example/core", "password": PASSWORD}
    )

    # When it runs
    world.drive(job_id)

    # Then neither secret is stored, and the lines still say what happened
    messages = [m for *_, m in said(world, job_id)]
    assert messages == [
        "connecting to mysql://app:***@db.example/core",
        "logging in with ***",
        "auth: user=app password=***",
        "the uri's password alone: ***",
    ]
    # And the worker's own console (any other handler) gets the masked lines too
    shown = "\n".join(r.getMessage() for r in at_info.records)
    assert "logging in with ***" in shown
    assert PASSWORD not in shown and "uri-Pw-77" not in shown


# -- bounded -----------------------------------------------------------------------------------


def test_an_attempt_keeps_its_newest_lines_and_says_how_many_went(world: World) -> None:
    # Given a step that logs far more lines than an attempt keeps
    total = MAX_LINES * 2 + 7

    def talk(ctx: StepContext) -> None:
        for i in range(total):
            ctx.log.info("line %d", i)

    world.linear("chatty", Step("talk", talk))
    job_id = world.submit("chatty")

    # When it runs
    world.drive(job_id)

    # Then the newest lines are kept, after a line saying how many older ones were dropped
    kept = lines(world, job_id)
    assert len(kept) == MAX_LINES
    dropped = total - (MAX_LINES - 1)
    assert kept[0]["level"] == "WARNING"
    assert kept[0]["message"].startswith(f"[{dropped} earlier lines of this attempt were dropped")
    assert [k["message"] for k in kept[1:]] == [f"line {i}" for i in range(dropped, total)]


def test_an_attempt_keeps_at_most_its_bytes(world: World) -> None:
    # Given a step that logs long lines
    long = "x" * 1000

    def talk(ctx: StepContext) -> None:
        for i in range(200):
            ctx.log.info("%d %s", i, long)

    world.linear("wide", Step("talk", talk))
    job_id = world.submit("wide")

    world.drive(job_id)

    # Then what is kept fits the bound: the newest lines, and the note
    kept = lines(world, job_id)
    assert sum(len(k["message"]) for k in kept[1:]) <= MAX_BYTES
    assert kept[-1]["message"] == f"199 {long}"
    assert "earlier lines of this attempt were dropped" in kept[0]["message"]
    assert len(kept) < 100


def test_the_bound_holds_across_runs_of_one_attempt(world: World) -> None:
    # Given a step that logs 300 lines, waits, and logs 300 more when it runs again
    def twice(ctx: StepContext) -> Any:
        run = ctx.state.get("run", 0) + 1
        for i in range(300):
            ctx.log.info("run %d line %d", run, i)
        if run == 1:
            return ctx.wait(60, "for the second half", run=run)
        return "done"

    world.linear("halves", Step("talk", twice))
    job_id = world.submit("halves")

    # When it runs, waits, and runs again (the same attempt)
    world.drive(job_id)
    world.pass_time(job_id)
    assert world.drive(job_id)["status"] == "succeeded"

    # Then the attempt holds its newest lines across both runs, and says how many went
    kept = lines(world, job_id)
    assert len(kept) == MAX_LINES
    assert kept[0]["message"].startswith(f"[{600 - (MAX_LINES - 1)} earlier lines")
    assert kept[1]["message"] == f"run 1 line {600 - (MAX_LINES - 1)}"
    assert kept[-1]["message"] == "run 2 line 299"
    assert {k["attempt"] for k in kept} == {1}


def test_a_long_line_is_cut(world: World) -> None:
    world.linear("long", Step("talk", lambda ctx: ctx.log.info("y" * 10_000)))
    job_id = world.submit("long")

    world.drive(job_id)

    (line,) = lines(world, job_id)
    assert line["message"].endswith("…(cut)")
    assert len(line["message"]) <= 4000


# -- while it runs, and in threads -------------------------------------------------------------


def test_lines_are_stored_while_the_step_still_runs(world: World) -> None:
    # Given a long step that logs a line and then holds
    gate = Gate()

    def long(ctx: StepContext) -> None:
        ctx.log.info("started the copy")
        gate.hold()
        ctx.log.info("finished the copy")

    world.linear("long", Step("copy", long))
    job_id = world.submit("long")

    # When a worker runs it, then its first line is in the store before the step ends
    worker = Background(world.runner, job_id)
    assert gate.entered.wait(10)
    wait_until(lambda: lines(world, job_id), 10, "the first line in the store")
    assert [m for *_, m in said(world, job_id)] == ["started the copy"]
    assert world.steps(job_id) == {"copy": "running"}

    # And once it ends, both
    gate.released.set()
    worker.join()
    assert [m for *_, m in said(world, job_id)] == ["started the copy", "finished the copy"]


def test_steps_running_at_once_keep_their_own_lines(world: World) -> None:
    # Given a step that holds in one thread while another job's step logs in another
    gate = Gate()

    def held(ctx: StepContext) -> None:
        ctx.log.info("held before")
        logging.getLogger("mylib").info("held library line")
        gate.hold()
        ctx.log.info("held after")

    def quick(ctx: StepContext) -> None:
        ctx.log.info("quick line")
        logging.getLogger("mylib").info("quick library line")

    world.linear("held", Step("h", held))
    world.linear("quick", Step("q", quick))
    slow_job, quick_job = world.submit("held"), world.submit("quick")

    # When both run at once, in two threads of one worker
    worker = Background(world.runner, slow_job)
    assert gate.entered.wait(10)
    world.drive(quick_job)
    gate.released.set()
    worker.join()

    # Then each job holds its own lines only
    assert [m for *_, m in said(world, slow_job)] == [
        "held before",
        "held library line",
        "held after",
    ]
    assert [m for *_, m in said(world, quick_job)] == ["quick line", "quick library line"]


def test_ctx_log_from_a_thread_the_step_starts_is_kept(world: World) -> None:
    def fan(ctx: StepContext) -> None:
        workers = [
            threading.Thread(target=ctx.log.info, args=("part %d copied", i)) for i in range(3)
        ]
        for t in workers:
            t.start()
        for t in workers:
            t.join()

    world.linear("fan", Step("copy", fan))
    job_id = world.submit("fan")

    world.drive(job_id)

    assert sorted(m for *_, m in said(world, job_id)) == [f"part {i} copied" for i in range(3)]
