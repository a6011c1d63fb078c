"""``PRODINF_LOG_FORMAT``: the lines a process writes, as text or one JSON object a line.

A handler with prodinf's formatter is put on the root logger, as a worker, the portal
or ``prodinf up`` has it, and the engine runs a real job on a SQLite store (the
``world``, tests/world.py); each test reads what the handler wrote, as a log collector
(json) or a person (text) would. Read each test as Given / When / Then.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from prodinf import Step
from prodinf.engine.context import StepContext
from prodinf.engine.logformat import JsonFormatter, configure, formatter_for
from prodinf.exceptions import PermanentError
from tests.world import World

PASSWORD = "hunter2-Json-Pw"
URI_PASSWORD = "uri-Pw-4471"


class Connect(BaseModel):
    src_uri: str
    password: str


@pytest.fixture
def written(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """What a root handler with the format given as the test's param writes (json unless
    parametrised), at INFO as in a worker."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter_for(getattr(request, "param", "json")))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line written, each parsed (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def run_connect(world: World) -> str:
    """A job whose step echoes its secrets in every way a step logs, then fails."""

    def connect(ctx: StepContext) -> None:
        params: Connect = ctx.params  # type: ignore[assignment]
        ctx.log.info("connecting to %s", params.src_uri)
        logging.getLogger("driver").warning("auth: user=app password=%s", params.password)
        # ctx.log from a thread the step starts: still the step's line
        helper = threading.Thread(target=ctx.log.info, args=("helper has %s", params.password))
        helper.start()
        helper.join()
        try:
            raise RuntimeError(f"refused {params.src_uri} with {params.password}")
        except RuntimeError:
            logging.getLogger("driver").exception("could not connect")
        raise PermanentError("gave up")

    world.linear("connect", Step("connect", connect), params=Connect)
    job_id = world.submit(
        "connect", {"src_uri": f"mysql://app:{URI_PASSWORD}@db.example/core", "password": PASSWORD}
    )
    assert world.drive(job_id)["status"] == "failed"
    return job_id


def test_a_steps_lines_are_json_objects_with_the_job_and_no_secret(
    world: World, written: io.StringIO
) -> None:
    # Given a root handler writing JSON, and a job whose step logs its secrets and fails
    # When a worker runs it
    job_id = run_connect(world)

    # Then every line is one JSON object
    lines = json_lines(written)
    step_lines = [line for line in lines if line.get("job_id") == job_id]
    assert [(line["logger"], line["message"]) for line in step_lines] == [
        ("prodinf.steps.connect", "connecting to mysql://app:***@db.example/core"),
        ("driver", "auth: user=app password=***"),
        ("prodinf.steps.connect", "helper has ***"),
        ("driver", "could not connect"),
    ]
    # And each of the step's lines names its job, kind, step, queue and attempt
    for line in step_lines:
        assert {k: line[k] for k in ("job_id", "kind", "step", "queue", "attempt")} == {
            "job_id": job_id,
            "kind": "connect",
            "step": "connect",
            "queue": world.settings.queue_jobs,
            "attempt": 1,
        }
        assert set(line) >= {"time", "level", "logger", "message", "process", "process_name"}
    # And the traceback is there as text, masked too
    failed = step_lines[-1]
    assert failed["level"] == "ERROR"
    assert "Traceback (most recent call last)" in failed["exc_info"]
    assert "RuntimeError: refused mysql://app:***@db.example/core with ***" in failed["exc_info"]
    # And no secret is in any line
    text = written.getvalue()
    assert PASSWORD not in text and URI_PASSWORD not in text
    # And a line no step wrote has no job fields
    assert [line for line in lines if "job_id" not in line] == [
        line for line in lines if line.get("job_id") != job_id
    ]


@pytest.mark.parametrize("written", ["text"], indirect=True)
def test_text_lines_are_masked_too(world: World, written: io.StringIO) -> None:
    # Given a root handler writing text; when the job runs
    run_connect(world)

    # Then its lines say what happened, with no secret, the traceback's neither
    text = written.getvalue()
    assert "connecting to mysql://app:***@db.example/core" in text
    assert "helper has ***" in text
    assert "RuntimeError: refused mysql://app:***@db.example/core with ***" in text
    assert PASSWORD not in text and URI_PASSWORD not in text


def test_a_line_no_job_wrote() -> None:
    # Given a record outside any step, with a URL password and a password= in it
    record = logging.LogRecord(
        "prodinf.portal", logging.WARNING, __file__, 1,
        "store %s refused: password=%s", ("postgresql://u:pg-Pw-1@db/prodinf", "x-Pw-2"), None,
    )  # fmt: skip
    record.created = 1767225600.25  # 2026-01-01T00:00:00.250Z

    # When it is formatted as JSON
    line = json.loads(JsonFormatter().format(record))

    # Then it holds the time in ISO 8601 (UTC), the level, logger, masked message and process
    assert line == {
        "time": "2026-01-01T00:00:00.250+00:00",
        "level": "WARNING",
        "logger": "prodinf.portal",
        "message": "store postgresql://u:***@db/prodinf refused: password=***",
        "process": record.process,
        "process_name": record.processName,
    }


def test_a_bad_format_string_still_gives_a_json_line() -> None:
    record = logging.LogRecord("lib", logging.INFO, __file__, 1, "%d rows", ("many",), None)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "'%d rows' ('many',)"


def test_configure_puts_one_handler_on_the_root_logger() -> None:
    # Given a process that configures its logging twice (json, then text)
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    json_out, text_out = io.StringIO(), io.StringIO()
    try:
        configure("json", "INFO", json_out)
        logging.getLogger("werkzeug").info('127.0.0.1 - "GET /?token=tok-Pw-3 HTTP/1.1" 200')
        configure("text", "warning", text_out)
        logging.getLogger("prodinf.up").info("not shown: below WARNING")
        logging.getLogger("prodinf.up").warning("worker jobs exited with 1; restarting")
        added = [h for h in root.handlers if h not in before]
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(False)

    # Then only the second handler stayed, at the second level
    assert len(added) == 1
    # And each wrote its own format, masked
    (request,) = json_lines(json_out)
    assert request["logger"] == "werkzeug"
    assert request["message"] == '127.0.0.1 - "GET /?token=*** HTTP/1.1" 200'
    shown = text_out.getvalue()
    assert shown.endswith("prodinf.up: worker jobs exited with 1; restarting\n")
    assert "WARNING/MainProcess" in shown
    assert "not shown" not in shown


def test_with_json_python_warnings_are_json_lines_too() -> None:
    # Given a process configured for JSON
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        configure("json", "INFO", out)
        # When a library warns (let through pytest's filterwarnings = error)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("old setting", UserWarning, stacklevel=1)
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(False)

    # Then the warning is a JSON line, not text on stderr
    (line,) = json_lines(out)
    assert line["logger"] == "py.warnings"
    assert "UserWarning: old setting" in line["message"]
