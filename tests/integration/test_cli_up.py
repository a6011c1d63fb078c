"""``prodinf up`` as a user runs it: one command, embedded defaults, no server.

Given ``prodinf up`` started as a real process under a temporary ``PRODINF_HOME``
(its portal, a Celery worker per queue and the scheduler) and a real HTTP server on
127.0.0.1; when jobs are submitted through the REST API and the ``prodinf`` command,
then they run, every view shows them, and Ctrl-C stops every process it started.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.up import Up, processes_of, running_up
from tests.loopback import Loopback, Reply, Request
from tests.waiting import follow_over_http, wait_until

pytestmark = pytest.mark.integration

BODY = b"prodinf up serves this file\n" * 256
SHA256 = hashlib.sha256(BODY).hexdigest()
RESULT = {"status_code": 200, "bytes": len(BODY), "sha256": SHA256}


def the_file(request: Request) -> Reply:
    return Reply(200, BODY)


@pytest.fixture
def file_url() -> Iterator[str]:
    """The URL of ``BODY`` on a real HTTP server on 127.0.0.1."""
    with Loopback(the_file) as server:
        yield server.url("/data/file.bin")


@pytest.fixture
def up(home: Path, tmp_path: Path) -> Iterator[Up]:
    """``prodinf up --port 0`` on embedded defaults under ``home``, serving at ``up.url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODINF_")}
    env.update(PRODINF_HOME=str(home), COLUMNS="300")
    with running_up(env, tmp_path, home, tmp_path / "up.out") as running:
        yield running


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
