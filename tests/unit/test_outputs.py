"""What a step returns must be JSON, and no secret in an error, a progress message, a
wait reason or an output is shown unmasked: not in the job, not in the logs.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from typing import Any

import pytest

from prodinf import Retry, Step, Wait
from prodinf.engine.context import StepContext
from tests.unit.leaks import MASKED_URL, SECRET_URL, logged
from tests.unit.workers import count, counter
from tests.world import World

# -- outputs and secrets -----------------------------------------------------------------


def test_a_step_returning_a_non_json_output_fails_with_a_clear_message(world: World) -> None:
    # Given a step that returns an object JSON cannot carry, with retries
    calls = counter()

    def handle(ctx: StepContext) -> Any:
        count(calls, "open")
        return {"handle": object()}

    world.linear("leaky", Step("open", handle, retry=Retry(attempts=3)))

    # When it runs
    job = world.drive(world.submit("leaky"))

    # Then the job failed at once, saying which step and why
    assert job["status"] == "failed"
    assert job["error"]["type"] == "PermanentError"
    assert job["error"]["message"].startswith("step open returned a non-JSON output")
    assert "not JSON serializable" in job["error"]["message"]
    assert calls == {"open": 1}  # no use retrying


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_step_returning_a_non_finite_number_fails_with_a_clear_message(
    world: World, value: float
) -> None:
    # NaN and Infinity are not JSON: PostgreSQL's JSONB refuses them, and the API
    # would answer a body JSON clients cannot parse.
    # Given a step that returns NaN or Infinity
    world.linear("nan", Step("ratio", lambda ctx: {"ratio": value}))

    # When it runs
    job = world.drive(world.submit("nan"))

    # Then the job failed, saying the output is not JSON
    assert job["status"] == "failed"
    assert "non-JSON output" in job["error"]["message"]


def test_a_wait_with_non_json_state_fails_the_job_instead_of_crashing_the_worker(
    world: World,
) -> None:
    # Given a step that waits, keeping state JSON cannot carry
    world.linear("bad-wait", Step("poll", lambda ctx: Wait(60, "later", {"conn": object()})))
    job_id = world.submit("bad-wait")

    # When it runs
    job = world.drive(job_id)  # must not raise: the worker would crash on every redelivery

    # Then the job failed, saying why
    assert job["status"] == "failed"
    assert "JSON" in job["error"]["message"]


def test_a_secret_in_an_error_never_appears_unmasked(
    world: World, logs: pytest.LogCaptureFixture
) -> None:
    # Given a step whose error names a database URL with its password, retried once
    def connect(ctx: StepContext) -> None:
        raise RuntimeError(f"could not connect to {SECRET_URL}: timeout")

    world.linear("db", Step("connect", connect, retry=Retry(attempts=2, backoff=0.01)))
    job_id = world.submit("db")

    # When it fails, is retried, and fails again
    job = world.drive(job_id)  # first failure: retrying
    shown_while_retrying = json.dumps(job)
    world.pass_time(job_id)
    job = world.drive(job_id)  # second failure: failed

    # Then the job, its history and the logs show the URL masked, never the password
    assert job["status"] == "failed"
    for shown in (shown_while_retrying, json.dumps(job)):
        assert "secret" not in shown
        assert MASKED_URL in shown
    assert job["error"]["message"] == f"could not connect to {MASKED_URL}: timeout"
    failed = next(h for h in job["history"] if h["event"] == "step.failed")
    assert MASKED_URL in failed["message"] and MASKED_URL in failed["data"]["traceback"]
    assert "secret" not in logged(logs)


def test_a_secret_in_progress_is_masked(world: World, logs: pytest.LogCaptureFixture) -> None:
    # Given a step that reports progress naming a database URL with its password
    def copy(ctx: StepContext) -> Any:
        ctx.progress(f"copying from {SECRET_URL}")
        return world.describe(ctx.job_id)["progress"]["message"]  # what a user sees meanwhile

    world.linear("p", Step("copy", copy))

    # When it runs
    job = world.drive(world.submit("p"))

    # Then what a user saw meanwhile was masked, and no log line has the password
    assert job["result"] == f"copying from {MASKED_URL}"
    assert "secret" not in logged(logs)


def test_a_secret_in_a_wait_reason_never_appears_unmasked(
    world: World, logs: pytest.LogCaptureFixture
) -> None:
    # Given a step that waits, its reason naming a database URL with its password
    world.linear("w", Step("copy", lambda ctx: ctx.wait(60, f"waiting for {SECRET_URL}")))

    # When it runs
    job = world.drive(world.submit("w"))

    # Then neither the waiting job nor the logs show the password
    assert job["status"] == "waiting"
    assert "secret" not in logged(logs)
    shown = json.dumps(job)
    assert "secret" not in shown, [
        (k, v) for k, v in (("progress", job["progress"]), ("step", job["steps"][0]))
    ]


def test_a_secret_in_a_step_output_is_masked_where_the_job_is_shown(
    world: World, logs: pytest.LogCaptureFixture
) -> None:
    # Given a step whose output is a database URL with its password, which a later step
    # needs as it is; describe() (the API, the pages) must not show it
    world.linear(
        "dsn",
        Step("make", lambda ctx: {"dsn": SECRET_URL}),
        Step("use", lambda ctx: ctx.outputs["make"]),
    )

    # When it runs
    job = world.drive(world.submit("dsn"))

    # Then the job shows the output masked, and no log line has the password
    assert job["status"] == "succeeded"
    assert "secret" not in json.dumps(job)
    assert job["result"] == {"dsn": MASKED_URL}
    assert "secret" not in logged(logs)


def test_a_secret_logged_by_prodinf_would_be_seen(logs: pytest.LogCaptureFixture) -> None:
    """The tests above are only as good as ``logs``: it sees a DEBUG record of any
    prodinf logger, from any thread, with its arguments and traceback."""

    # When a prodinf module logs a secret at DEBUG, in another thread, with a traceback
    def leak() -> None:
        try:
            raise RuntimeError(f"cannot reach {SECRET_URL}")
        except RuntimeError:
            logging.getLogger("prodinf.engine.runner").debug("retrying", exc_info=True)
        logging.getLogger("prodinf.store").debug("connecting to %s", SECRET_URL)

    thread = threading.Thread(target=leak)
    thread.start()
    thread.join(10)

    # Then both records are there, secret and all
    shown = logged(logs)
    assert shown.count("secret") == 2
    assert "RuntimeError: cannot reach" in shown
