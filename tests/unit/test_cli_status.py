"""``prodinf status``: queues, workers, jobs by status and the latest failures, on
embedded defaults (a real SQLite store and filesystem broker under a temporary home).

Given jobs submitted for real (one failed, run in this process against a real HTTP
server answering 404; one queued, its message in the broker) and a worker's row as a
running worker writes it; when a user runs ``prodinf status`` (in-process through
click's ``CliRunner``, and as a real process for ``--watch``); then it shows them.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from prodinf.celery_app import create_celery
from prodinf.cli import main
from prodinf.config import Settings, get_settings
from prodinf.runtime import Runtime
from prodinf.store import upgrade, workers
from prodinf.store.types import utcnow
from tests.loopback import Loopback, Reply, Request
from tests.waiting import wait_until

UNREACHABLE = "http://127.0.0.1:1/x"  # valid, never fetched: no worker runs here
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: The jobs table's row: a count under each of the seven statuses.
COUNTS = re.compile(r"│" + r"\s+(\d+)\s+│" * 7)


@pytest.fixture(autouse=True)
def cli_env(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Embedded defaults under ``home``, no PRODINF_* from the shell, a wide console."""
    for name in list(os.environ):
        if name.startswith("PRODINF_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PRODINF_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "300")  # rich tables on one line per row
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def rt(cli_env: Path) -> Iterator[Runtime]:
    """The submitting side on the same home (a script, the portal)."""
    settings = Settings(home=cli_env)
    runtime = Runtime(settings, create_celery(settings))
    upgrade(runtime.store)
    yield runtime
    runtime.close()


def prodinf(*args: str) -> Result:
    get_settings.cache_clear()
    result = CliRunner().invoke(main, list(args))
    get_settings.cache_clear()
    return result


def succeeded(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def gone(_request: Request) -> Reply:
    return Reply(404, b"gone")


@pytest.fixture
def jobs(rt: Runtime) -> dict[str, Any]:
    """A job that failed (its URL answered 404), one still queued, and a worker seen."""
    with Loopback(gone) as server:
        failed, _ = rt.jobs.submit("http_get", {"url": server.url("/gone")})
        rt.runner.drive(failed["id"])  # as a worker would (its message stays unconsumed)
    queued, _ = rt.jobs.submit("http_get", {"url": UNREACHABLE})
    workers.seen(rt.store, "jobs@box", ["jobs", "jobs.due"], 4242, utcnow())
    return {"failed": rt.store.describe(failed["id"]), "queued": rt.store.describe(queued["id"])}


def test_status_shows_queues_workers_counts_and_the_latest_failure(jobs: dict[str, Any]) -> None:
    failed, queued = jobs["failed"], jobs["queued"]
    assert failed["status"] == "failed"

    # When a user asks
    out = succeeded(prodinf("status"))

    # Then the jobs queue holds both messages (the broker's files), no consumer the
    # embedded broker could name, the worker seen, and how long its oldest job waits
    row = re.search(r"│ jobs +│ jobs +│ +(\d+) │ +(\d+) │ +(\S+) │ +(\d+) │ +(.*?) +│", out)
    assert row, out
    assert row.groups()[:4] == ("2", "0", "-", "1")
    assert re.fullmatch(r"[\d.]+ s|\d+ min \d+ s", row.group(5)), row.group(5)
    # And the queues nobody used hold nothing, and no worker consumes them
    assert re.search(r"│ email +│ email +│ +0 │ +0 │ +- │ +0 │ +│", out), out
    # And the worker is listed with its queues
    assert re.search(r"│ jobs@box +│ jobs, jobs.due +│ 4242 +│ [\d.]+ s ago +│", out), out
    # And the jobs by status: one queued, one failed
    counts = COUNTS.search(out)
    assert counts, out
    assert counts.groups() == ("1", "0", "0", "0", "1", "0", "0")
    # And the latest failure, with its id and error
    assert re.search(rf"│ {failed['id']} +│ http_get +│ .* answered 404", out), out
    assert queued["id"] not in out


def test_status_as_json(jobs: dict[str, Any]) -> None:
    failed, queued = jobs["failed"], jobs["queued"]

    report = json.loads(succeeded(prodinf("status", "--json")))

    by_queue = {q["queue"]: q for q in report["queues"]}
    assert set(by_queue) == {"handover", "event", "email", "jobs"}
    assert {k: by_queue["jobs"][k] for k in ("messages", "lane_messages", "consumers")} == {
        "messages": 2,
        "lane_messages": 0,
        "consumers": None,  # the embedded broker does not know its consumers
    }
    assert by_queue["jobs"]["workers"] == 1
    assert by_queue["jobs"]["oldest_queued_at"] == queued["updated_at"]
    assert by_queue["jobs"]["oldest_queued_seconds"] >= 0
    assert by_queue["email"]["oldest_queued_at"] is None
    assert report["broker"]["error"] == ""
    assert [(w["name"], w["queues"], w["pid"]) for w in report["workers"]] == [
        ("jobs@box", ["jobs", "jobs.due"], 4242)
    ]
    assert report["counts"] == {
        "queued": 1, "running": 0, "waiting": 0, "succeeded": 0, "failed": 1,
        "cancelled": 0, "reverted": 0,
    }  # fmt: skip
    (failure,) = report["failures"]
    assert failure["id"] == failed["id"]
    assert failure["kind"] == "http_get"
    assert failure["step"] == failed["error"]["step"]
    assert failure["error"] == failed["error"]["message"]
    assert "answered 404" in failure["error"]
    # -n 0 lists no failure
    assert json.loads(succeeded(prodinf("status", "--json", "-n", "0")))["failures"] == []


def test_a_failures_error_is_masked(rt: Runtime) -> None:
    # Given a job that failed on a URL with a password in it
    with Loopback(gone) as server:
        url = server.url("/gone").replace("http://", "http://user:url-Pw-88@")
        failed, _ = rt.jobs.submit("http_get", {"url": url})
        rt.runner.drive(failed["id"])

    # Then neither the table nor the JSON shows the password
    for args in (("status",), ("status", "--json")):
        out = succeeded(prodinf(*args))
        assert failed["id"] in out
        assert "url-Pw-88" not in out


def test_an_empty_store_says_so(rt: Runtime) -> None:
    out = succeeded(prodinf("status"))
    assert "none seen in the last minute" in out
    assert re.search(r"latest failures.*│ none ", out, re.S), out


# -- --watch, in a real process ----------------------------------------------------------------


class Watched:
    """``prodinf status ARGS`` running as a real process; its output read as it comes."""

    def __init__(self, *args: str, tty: bool = False) -> None:
        env = {**os.environ, "COLUMNS": "200", "TERM": "xterm"}
        command = [sys.executable, "-m", "prodinf.cli", "status", *args]
        self.chunks: queue.Queue[str] = queue.Queue()
        self.text = ""
        if tty:  # a terminal, where rich redraws in place
            import pty

            master, slave = pty.openpty()
            self.proc = subprocess.Popen(
                command, env=env, stdin=slave, stdout=slave, stderr=subprocess.PIPE
            )
            os.close(slave)
            reader = lambda: os.read(master, 65536)  # noqa: E731
            self.closing = master
        else:
            self.proc = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            assert self.proc.stdout is not None
            stdout = self.proc.stdout
            reader = lambda: os.read(stdout.fileno(), 65536)  # noqa: E731
            self.closing = -1
        threading.Thread(target=self._read, args=(reader,), daemon=True).start()

    def _read(self, reader: Any) -> None:
        while True:
            try:
                data = reader()
            except OSError:  # the terminal closed
                return
            if not data:
                return
            self.chunks.put(data.decode(errors="replace"))

    def output(self) -> str:
        while not self.chunks.empty():
            self.text += self.chunks.get()
        return self.text

    def stop(self) -> tuple[int, str]:
        """Ctrl-C: its exit status and what it said on stderr."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        if self.closing >= 0:
            os.close(self.closing)
        return self.proc.returncode, err.decode(errors="replace")


@pytest.mark.slow
def test_watch_json_prints_a_report_each_refresh_until_ctrl_c(rt: Runtime) -> None:
    # Given prodinf status --watch 0.5 --json running on an empty store
    watched = Watched("--watch", "0.5", "--json")

    def reports() -> list[dict[str, Any]]:
        return [json.loads(line) for line in watched.output().splitlines() if line]

    try:
        wait_until(lambda: reports(), 60, "a first report", logs=watched.output)
        assert reports()[0]["counts"]["queued"] == 0
        # When a job is submitted
        rt.jobs.submit("http_get", {"url": UNREACHABLE})
        # Then a later report counts it, and every line is a whole JSON report
        wait_until(
            lambda: reports()[-1]["counts"]["queued"] == 1, 60, "a report with the job",
            logs=watched.output,
        )  # fmt: skip
    finally:
        code, err = watched.stop()
    # And Ctrl-C stops it cleanly
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.slow
def test_watch_redraws_the_tables_in_place_in_a_terminal(rt: Runtime) -> None:
    # Given prodinf status --watch in a terminal, on an empty store
    watched = Watched("--watch", "0.5", tty=True)

    def counts() -> list[tuple[str, ...]]:
        return [m.groups() for m in COUNTS.finditer(ANSI.sub("", watched.output()))]

    try:
        wait_until(lambda: counts(), 60, "the tables", logs=watched.output)
        assert counts()[0][0] == "0"
        # When a job is submitted
        rt.jobs.submit("http_get", {"url": UNREACHABLE})
        # Then the tables are drawn again, over the old ones, counting it
        wait_until(lambda: counts()[-1][0] == "1", 60, "the job counted", logs=watched.output)
        assert "\x1b[2K" in watched.output()  # lines erased: redrawn in place
    finally:
        code, err = watched.stop()
    assert code == 0, err
    assert "Traceback" not in err
