"""``prodinf up`` as a user runs it: one command, embedded defaults, no server.

Given ``prodinf up`` started as a real process under a temporary ``PRODINF_HOME``
(its portal, a Celery worker per queue and the scheduler) and a real HTTP server on
127.0.0.1; when jobs are submitted through the REST API and the ``prodinf`` command,
then they run, every view shows them, and Ctrl-C stops every process it started.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.loopback import Loopback, Reply, Request
from tests.waiting import follow_over_http, wait_until

pytestmark = pytest.mark.integration

BODY = b"prodinf up serves this file\n" * 256
SHA256 = hashlib.sha256(BODY).hexdigest()
RESULT = {"status_code": 200, "bytes": len(BODY), "sha256": SHA256}
UP_URL = re.compile(r"prodinf is up at (http://\S+)")
#: The installed ``prodinf`` script beside this interpreter, as a user's shell finds it.
SCRIPT = Path(sys.executable).with_name("prodinf")
PRODINF = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "prodinf.cli"]


def the_file(request: Request) -> Reply:
    return Reply(200, BODY)


@pytest.fixture
def file_url() -> Iterator[str]:
    """The URL of ``BODY`` on a real HTTP server on 127.0.0.1."""
    with Loopback(the_file) as server:
        yield server.url("/data/file.bin")


def processes_of(home: Path) -> dict[int, str]:
    """Live processes (pid -> command line) whose environment names ``home``.

    ``prodinf up`` hands ``PRODINF_HOME`` to every child, and a Celery pool process
    inherits its worker's environment, so this finds the whole tree, even processes
    that left ``up``'s process group (each child runs in its own session).
    """
    marker = f"PRODINF_HOME={home}".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue  # a zombie's environ is empty: it is not running
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found[int(entry.name)] = cmdline.decode(errors="replace").strip()
    return found


@dataclass
class Up:
    """A running ``prodinf up`` and the environment its users share."""

    proc: subprocess.Popen[bytes]
    home: Path
    env: dict[str, str]
    output_file: Path
    url: str = ""

    def output(self) -> str:
        return self.output_file.read_text(errors="replace")

    def logs(self) -> str:
        """Its output and the tail of each child's log, for failure messages."""
        parts = [f"==> prodinf up\n{self.output()}"]
        for log in sorted((self.home / "logs").glob("*.log")):
            parts.append(f"==> {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``prodinf ARGS`` in a shell that shares ``up``'s settings."""
        return subprocess.run(
            [*PRODINF, *args],
            env=self.env,
            cwd=self.home.parent,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def up(home: Path, tmp_path: Path) -> Iterator[Up]:
    """``prodinf up --port 0`` on embedded defaults under ``home``, serving at ``up.url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODINF_")}
    env.update(PRODINF_HOME=str(home), COLUMNS="300")
    output_file = tmp_path / "up.out"
    with output_file.open("wb") as out:
        proc = subprocess.Popen(
            [*PRODINF, "up", "--port", "0"],  # port 0: the OS picks a free one, up prints it
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of pytest's is not a Ctrl-C of up's
        )
    running = Up(proc, home, env, output_file)

    def printed_url() -> str | None:
        if proc.poll() is not None:
            pytest.fail(f"prodinf up exited with {proc.returncode}\n{running.logs()}")
        match = UP_URL.search(running.output())
        return match.group(1) if match else None

    try:
        running.url = wait_until(printed_url, 60, "prodinf up to print its URL", logs=running.logs)
        yield running
    finally:
        if proc.poll() is None:
            proc.terminate()  # up stops its children on SIGTERM as on Ctrl-C
            try:
                proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Anything up left behind (the test has failed on it): never leak a process.
        for pid in processes_of(home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def healthy(up: Up) -> bool:
    try:
        return requests.get(f"{up.url}/health", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def test_up_runs_jobs_from_the_api_and_the_cli_then_ctrl_c_stops_everything(
    up: Up, home: Path, tmp_path: Path, file_url: str
) -> None:
    """Given ``prodinf up`` on embedded defaults and a file on a local HTTP server,
    when an http_get job is posted to the REST API,
    then it succeeds with the file's digest, and the job list, the job page and
    ``prodinf show`` all show it;
    when ``prodinf post --wait`` submits another, then it follows it to success;
    when ``prodinf up`` gets SIGINT, then it exits 0 within 30 s leaving no process."""
    assert up.url.startswith("http://127.0.0.1:")
    wait_until(lambda: healthy(up), 30, "/health to answer 200", logs=up.logs)
    assert requests.get(f"{up.url}/health", timeout=5).json() == {"store": "ok", "broker": "ok"}

    # -- a job from the REST API -----------------------------------------------------------
    posted = requests.post(
        f"{up.url}/api/v1/jobs",
        json={"kind": "http_get", "params": {"url": file_url}},
        timeout=30,
    )
    assert posted.status_code == 201, posted.text
    job_id = posted.json()["id"]

    detail = follow_over_http(up.url, job_id, 60, logs=up.logs)
    assert detail["status"] == "succeeded", up.logs()
    assert detail["result"] == RESULT

    jobs_page = requests.get(f"{up.url}/", timeout=10)
    assert jobs_page.status_code == 200
    assert f'id="job-{job_id}" data-status="succeeded"' in jobs_page.text
    job_page = requests.get(f"{up.url}/jobs/{job_id}", timeout=10)
    assert job_page.status_code == 200
    assert job_id in job_page.text
    assert SHA256 in job_page.text

    shown = up.cli("show")
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"│ {job_id} +│ http_get +│ succeeded +│", shown.stdout), shown.stdout

    # -- a job from the command line, followed with the progress bar ----------------------
    waited = up.cli(
        "post", "http_get", "-p", f"url={file_url}", "--notify-email", "ops@example.org",
        "--wait", "--timeout", "60",
    )  # fmt: skip
    assert waited.returncode == 0, waited.stdout + waited.stderr + up.logs()
    assert "Traceback" not in waited.stderr
    submitted = re.search(r"submitted http_get job (\S+)", waited.stdout)
    assert submitted, waited.stdout
    assert f"http_get job {submitted.group(1)}: succeeded" in waited.stdout
    assert json.dumps(SHA256) in waited.stdout  # the printed result
    # and its mail links to the job's page on this portal (up knows its own address)
    outbox = home / "outbox"
    mail = wait_until(lambda: next(outbox.glob("*.eml"), None), 60, "the job's mail", logs=up.logs)
    body = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    text = body.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f"{up.url}/jobs/{submitted.group(1)}" in text

    # -- Ctrl-C ----------------------------------------------------------------------------
    tree = processes_of(home)
    children = [pid for pid in tree if _parent(pid) == up.proc.pid]
    # up's children (four workers and the scheduler) and the workers' pool processes,
    # which run in sessions of their own: processes_of finds them all.
    assert len(children) == 5, tree
    assert len(tree) > 1 + len(children), tree

    up.proc.send_signal(signal.SIGINT)
    try:
        code = up.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"prodinf up still running 30 s after SIGINT\n{up.logs()}")

    assert code == 0, up.logs()
    output = up.output()
    assert "stopped." in output
    assert "Traceback" not in output
    assert "restarting" not in output, up.logs()  # no child died, even on a fresh home
    try:
        wait_until(lambda: not processes_of(home), 5, "every process up started to end")
    except BaseException:
        print("left running:", processes_of(home))
        raise
    assert not (tmp_path / ".prodinf").exists()  # PRODINF_HOME, not ./.prodinf, was used


def _parent(pid: int) -> int | None:
    """The parent pid of ``pid`` (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after it.
    return int(stat.rpartition(")")[2].split()[1])
