"""A step's log where a user reads it: ``GET /api/v1/jobs/<id>/logs``, the job page, and
``prodinf logs JOB [--step] [--follow]`` (a real process, following a step that runs).

Jobs run for real in this process on a SQLite store under the test's home, as a
worker would run them; the portal reads that store through Flask's test client, and
the CLI through its own process. Read each test as Given / When / Then.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from prodinf import Flow, Retry, Step
from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.engine.context import StepContext
from prodinf.engine.registry import Registry, job_kind
from prodinf.exceptions import TransientError
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.store import upgrade
from tests.embedded import run, runtime_of, submit
from tests.pages import has_class, page, text_of
from tests.unit.workers import Background, Gate
from tests.waiting import wait_until

GATE = Gate()


def _copy(ctx: StepContext) -> int:
    ctx.log.info("copied %d rows into <core>", 3)
    logging.getLogger("mylib").warning("table meta is empty")
    return 3


def _check(ctx: StepContext) -> str:
    ctx.log.info("check try %d", ctx.attempt)
    if ctx.attempt == 1:
        raise TransientError("busy")
    ctx.log.error("2 rows without a name")
    return "ok"


def _held(ctx: StepContext) -> None:
    ctx.log.info("first line")
    GATE.hold()
    ctx.log.warning("second line")


@pytest.fixture
def app(settings: Settings, caplog: pytest.LogCaptureFixture) -> Iterator[Flask]:
    """A portal whose kinds log: ``copy_rows`` (copy, then check, which fails once) and
    ``held`` (logs, holds on ``GATE``, logs again)."""
    caplog.set_level(logging.INFO)  # as in a worker started with -l info
    kinds = Registry()

    @job_kind("copy_rows", into=kinds)
    def copy_rows(_params: object) -> Flow:
        return Flow.of(Step("copy", _copy), Step("check", _check, retry=Retry(2, backoff=0)))

    @job_kind("held", into=kinds)
    def held(_params: object) -> Flow:
        return Flow.of(Step("hold", _held))

    runtime = Runtime(settings, create_celery(settings), kinds)
    app = create_app(settings, runtime=runtime)
    upgrade(runtime.store)
    yield app
    runtime.close()


@pytest.fixture
def copied(app: Flask) -> str:
    """A ``copy_rows`` job run to the end: its check step failed once, then succeeded."""
    job_id = run(app, "copy_rows", {})
    rt = runtime_of(app)
    rt.runner.drive(job_id)  # the retry, due at once (no backoff)
    assert rt.store.describe(job_id)["status"] == "succeeded"
    return job_id


# -- the API -----------------------------------------------------------------------------------


def test_the_api_lists_a_jobs_lines_oldest_first(client: FlaskClient, copied: str) -> None:
    # When the job's log is asked for
    body = client.get(f"/api/v1/jobs/{copied}/logs").get_json()

    # Then every line comes, oldest first, with its step, attempt, level and logger
    items = body["items"]
    assert [(i["step"], i["attempt"], i["level"], i["logger"], i["message"]) for i in items] == [
        ("copy", 1, "INFO", "prodinf.steps.copy_rows", "copied 3 rows into <core>"),
        ("copy", 1, "WARNING", "mylib", "table meta is empty"),
        ("check", 1, "INFO", "prodinf.steps.copy_rows", "check try 1"),
        ("check", 2, "INFO", "prodinf.steps.copy_rows", "check try 2"),
        ("check", 2, "ERROR", "prodinf.steps.copy_rows", "2 rows without a name"),
    ]
    assert body["next_after"] == items[-1]["seq"]
    assert [i["seq"] for i in items] == sorted(i["seq"] for i in items)
    assert all(i["at"].endswith("+00:00") for i in items)


def test_the_api_filters_by_step_and_attempt_and_pages_with_after(
    client: FlaskClient, copied: str
) -> None:
    url = f"/api/v1/jobs/{copied}/logs"

    def messages(query: str) -> list[str]:
        return [i["message"] for i in client.get(f"{url}?{query}").get_json()["items"]]

    assert messages("step=check") == ["check try 1", "check try 2", "2 rows without a name"]
    assert messages("step=check&attempt=2") == ["check try 2", "2 rows without a name"]
    first = client.get(f"{url}?limit=2").get_json()
    assert [i["message"] for i in first["items"]] == [
        "copied 3 rows into <core>",
        "table meta is empty",
    ]
    assert messages(f"after={first['next_after']}&limit=1") == ["check try 1"]
    # Following a job that logged nothing new: no lines, and the same place to go on from
    last = client.get(url).get_json()["next_after"]
    assert client.get(f"{url}?after={last}").get_json() == {"items": [], "next_after": last}


def test_the_api_gives_the_log_as_plain_text(client: FlaskClient, copied: str) -> None:
    response = client.get(f"/api/v1/jobs/{copied}/logs?step=copy&format=text")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True).splitlines()
    assert len(text) == 2
    assert text[0].endswith("INFO    [copy#1] prodinf.steps.copy_rows: copied 3 rows into <core>")
    assert text[1].endswith("WARNING [copy#1] mylib: table meta is empty")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("after=-1", "after"),
        ("after=x", "after"),
        ("limit=0", "limit"),
        ("limit=5001", "limit"),
        ("attempt=0", "attempt"),
        ("format=xml", "format"),
    ],
)
def test_the_api_refuses_a_bad_filter_naming_it(
    client: FlaskClient, copied: str, query: str, field: str
) -> None:
    response = client.get(f"/api/v1/jobs/{copied}/logs?{query}")

    assert response.status_code == 400
    assert response.get_json()["field"] == field


def test_the_api_answers_404_for_an_unknown_job(client: FlaskClient) -> None:
    response = client.get("/api/v1/jobs/00000000-0000-0000-0000-000000000000/logs")

    assert response.status_code == 404
    assert response.get_json()["field"] == "id"


# -- the job page ------------------------------------------------------------------------------


def test_the_job_page_shows_each_steps_latest_attempt(client: FlaskClient, copied: str) -> None:
    # When the job's page is opened
    html = page(client, f"/jobs/{copied}")

    # Then each step shows its log: copy's lines, escaped, with their levels
    copy_log = text_of(html, "step-copy-log")
    assert "Log: 2 lines" in copy_log
    assert "INFO prodinf.steps.copy_rows copied 3 rows into <core>" in copy_log
    assert "WARNING mylib table meta is empty" in copy_log
    assert "into &lt;core&gt;" in html
    # And check's latest attempt only, its error line marked as an error
    check_log = text_of(html, "step-check-log")
    assert "Log of attempt 2: 2 lines" in check_log
    assert "check try 2" in check_log and "check try 1" not in check_log
    assert '<span class="log-line log-error">' in html
    # And a step that succeeded shows its log folded
    assert not has_class(html, "step-check-log", "open")
    assert '<details class="step-log" id="step-check-log">' in html


def test_the_full_log_link_gives_the_attempts_lines(client: FlaskClient, copied: str) -> None:
    html = page(client, f"/jobs/{copied}")
    check = html.index('id="step-check-log"')
    start = html.index('href="', html.index('class="full-log"', check)) + len('href="')
    link = html[start : html.index('"', start)].replace("&amp;", "&")

    text = client.get(link).get_data(as_text=True)

    assert text.splitlines()[0].endswith("[check#2] prodinf.steps.copy_rows: check try 2")


def test_the_page_of_a_running_step_shows_its_log_open(app: Flask, client: FlaskClient) -> None:
    GATE.entered.clear()
    GATE.released.clear()
    job_id = submit(app, "held", {})
    worker = Background(runtime_of(app).runner, job_id)
    try:
        assert GATE.entered.wait(10)
        # the first line is written within a second, while the step still runs
        html = wait_until(
            lambda: logged_page(client, job_id), 10, "the running step's log on the page"
        )
        assert '<details class="step-log" id="step-hold-log" open>' in html
        assert "first line" in text_of(html, "step-hold-log")
    finally:
        GATE.released.set()
        worker.join()


def logged_page(client: FlaskClient, job_id: str) -> str:
    """The job's page once it shows a step's log, else empty."""
    html = page(client, f"/jobs/{job_id}")
    return html if 'class="step-log"' in html else ""


# -- the CLI -----------------------------------------------------------------------------------


def cli(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODINF_")}
    env.update(PRODINF_HOME=str(home), COLUMNS="200")
    return subprocess.Popen(
        [sys.executable, "-m", "prodinf.cli", "logs", *args],
        env=env,
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_prodinf_logs_prints_a_jobs_lines_by_a_start_of_its_id(home: Path, copied: str) -> None:
    # When prodinf logs is given the 8 characters a page shows, and a step
    done = cli(home, copied[:8], "--step", "check")
    out, err = done.communicate(timeout=60)

    # Then it prints that step's lines, oldest first, each with its attempt
    assert done.returncode == 0, err
    printed = out.splitlines()
    assert [line.split("] ", 1)[1] for line in printed] == [
        "prodinf.steps.copy_rows: check try 1",
        "prodinf.steps.copy_rows: check try 2",
        "prodinf.steps.copy_rows: 2 rows without a name",
    ]
    assert "ERROR   [check#2]" in printed[2]


def test_prodinf_logs_of_an_unknown_job_says_so(home: Path, app: Flask) -> None:
    done = cli(home, "abcdef12")
    _, err = done.communicate(timeout=60)

    assert done.returncode == 1
    assert "no job's id starts with 'abcdef12'" in err
    assert "Traceback" not in err


def test_prodinf_logs_follow_prints_lines_as_they_come_until_the_job_ends(
    app: Flask, home: Path
) -> None:
    # Given a job whose step has logged a line and holds
    GATE.entered.clear()
    GATE.released.clear()
    job_id = submit(app, "held", {})
    worker = Background(runtime_of(app).runner, job_id)
    try:
        assert GATE.entered.wait(10)
        # When prodinf logs --follow runs
        follow = cli(home, job_id, "--follow")
        assert follow.stdout is not None
        # Then it prints the first line while the step still runs
        assert follow.stdout.readline().rstrip().endswith("first line")
        assert follow.poll() is None
    finally:
        # And when the step goes on and ends, it prints the next line, and stops
        GATE.released.set()
        worker.join()
    out, err = follow.communicate(timeout=60)
    assert out.rstrip().endswith("prodinf.steps.held: second line")
    assert follow.returncode == 0
    assert f"job {job_id}: succeeded" in err
