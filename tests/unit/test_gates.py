"""The gates of the test tiers (``tests.gates``): what counts as CI, and what a test that
cannot run does there and on a laptop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.gates import truthy

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "1", "yes", "Yes", " true "])
def test_a_true_value_of_ci_counts_as_ci(value: str) -> None:
    """Given CI set to true, 1 or yes in any case, then it counts as CI."""
    assert truthy(value)


@pytest.mark.parametrize("value", ["false", "False", "0", "no", "", "off", "maybe", None])
def test_any_other_value_of_ci_does_not(value: str | None) -> None:
    """Given CI unset, empty, false, 0 or anything else, then it does not count as CI."""
    assert not truthy(value)


@pytest.mark.parametrize(("ci", "outcome"), [("true", "failed"), ("false", "skipped")])
def test_a_missing_server_fails_in_ci_and_skips_elsewhere(ci: str, outcome: str) -> None:
    # Given a test that requires a server nobody listens for (port 1 on loopback)
    program = (
        "import pytest\n"
        "from tests.gates import require\n"
        "def test_needs_a_server():\n"
        "    require('RabbitMQ', 'amqp://127.0.0.1:1//')\n"
    )

    # When pytest runs it with CI set to a true value, or to "false"
    done = subprocess.run(
        [sys.executable, "-c", RUN, program],
        env={"CI": ci, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Then it fails in CI, and skips saying why elsewhere
    assert done.stdout.strip().splitlines()[-1] == outcome, done.stdout + done.stderr


#: Runs one test module's text through pytest in a clean process; prints its outcome.
RUN = """
import pathlib, sys, tempfile, pytest
folder = pathlib.Path(tempfile.mkdtemp())
(folder / "test_gate.py").write_text(sys.argv[1])
outcomes = []
class Outcome:
    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            outcomes.append(report.outcome)
pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", str(folder), str(folder)],
            plugins=[Outcome()])
print(outcomes[-1])
"""
