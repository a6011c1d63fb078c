"""One home for every process of a user: ``prodinf up`` and a script run elsewhere.

Given ``prodinf up`` started with no ``PRODINF_*`` setting in a folder without
``.prodinf`` (so on the user's ``~/.prodinf``), when a Python script run from another
folder sends ``email_when_complete.delay(url, address)``, then the workers of ``up``
run it and the mail is written; when a shell whose home holds no worker submits work,
then it is told so, once, with what to do.
"""

from __future__ import annotations

import email
import email.policy
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.up import PRODINF, Up, running_up
from tests.loopback import Loopback, Reply, Request
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SNIPPET = """
import sys
from prodinf.email_tasks import email_when_complete
result = email_when_complete.delay(sys.argv[1], "ada@example.org")
if len(sys.argv) > 2:
    print(result.get(timeout=float(sys.argv[2]))["subject"])
"""


def complete(request: Request) -> Reply:
    return Reply(200, {"status": "complete", "subject": "run 7 done", "body": "all good"})


@pytest.fixture
def user(tmp_path: Path) -> dict[str, str]:
    """A user's environment: no PRODINF_* variable, HOME in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODINF_")}
    env.update(HOME=str(tmp_path / "user"), COLUMNS="300")
    (tmp_path / "user").mkdir()
    return env


@pytest.fixture
def up(user: dict[str, str], tmp_path: Path) -> Iterator[Up]:
    """``prodinf up`` started in a checkout that holds no ``.prodinf``."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    home = (tmp_path / "user" / ".prodinf").resolve()
    with running_up(user, checkout, home, tmp_path / "up.out") as running:
        yield running


def run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def workers_seen(home: Path) -> int:
    """How many workers have said, in the store under ``home``, that they run."""
    try:
        with sqlite3.connect(home / "prodinf.sqlite") as conn:
            return int(conn.execute("SELECT COUNT(*) FROM prodinf_workers").fetchone()[0])
    except sqlite3.OperationalError:  # not migrated yet
        return 0


def started(up: Up) -> None:
    """Wait for the four workers of ``up`` (one per queue) to say they run."""
    wait_until(lambda: workers_seen(up.home) >= 4, 60, "up's four workers", logs=up.logs)


def test_a_script_from_another_folder_uses_the_store_up_runs_on(
    up: Up, user: dict[str, str], tmp_path: Path
) -> None:
    """Given ``prodinf up`` on the user's ~/.prodinf, when a script in another folder
    sends email_when_complete.delay(url, address), then up's workers mail it, the
    script's ``result.get()`` returns, and nothing warns."""
    home = up.home
    assert f"home {home} " in up.output()
    started(up)
    elsewhere = tmp_path / "analysis" / "run7"
    elsewhere.mkdir(parents=True)

    with Loopback(complete) as status:
        done = run(user, elsewhere, sys.executable, "-c", SNIPPET, status.url("/runs/7"), "90")

    assert done.returncode == 0, done.stderr + up.logs()
    assert done.stdout.strip() == "run 7 done"
    assert "no worker" not in done.stderr, done.stderr
    mails = list((home / "outbox").glob("*.eml"))
    assert len(mails) == 1, up.logs()
    mail = email.message_from_bytes(mails[0].read_bytes(), policy=email.policy.default)
    assert mail["Subject"] == "run 7 done"
    assert not (elsewhere / ".prodinf").exists()
    assert not (tmp_path / "checkout" / ".prodinf").exists()

    shown = run(user, elsewhere, *PRODINF, "config", "--json")
    assert shown.returncode == 0, shown.stderr
    assert f'"home": "{home}"' in shown.stdout


def test_a_shell_on_a_store_no_worker_uses_is_told_once(
    up: Up, user: dict[str, str], tmp_path: Path
) -> None:
    """Given ``prodinf up`` running on ~/.prodinf, when a shell that found another home
    submits with ``prodinf post`` or a script sends a task, then each says, once, that
    no worker uses that store and how to reach the one that does; on ``up``'s own home
    nothing warns."""
    project = tmp_path / "project"
    (project / ".prodinf").mkdir(parents=True)  # a project keeping a store of its own

    posted = run(user, project, *PRODINF, "post", "http_get", "-p", "url=http://127.0.0.1:9/x")
    assert posted.returncode == 0, posted.stderr
    said = [line for line in posted.stderr.splitlines() if "no worker" in line]
    assert len(said) == 1, posted.stderr  # once, on a line of its own
    warning = said[0]
    assert warning.startswith("warning: no worker of queue jobs has used the store in "), warning
    assert str((project / ".prodinf").resolve()) in warning
    assert "PRODINF_HOME" in warning and "prodinf up" in warning

    with Loopback(complete) as status:
        sent = run(user, project, sys.executable, "-c", SNIPPET, status.url("/runs/8"))
    assert sent.returncode == 0, sent.stderr
    assert sent.stderr.count("no worker of queue email has used the store in ") == 1, sent.stderr

    # the shell that finds up's home: up's workers consume every queue, nothing to say
    started(up)
    quiet = run(user, tmp_path, *PRODINF, "post", "http_get", "-p", "url=http://127.0.0.1:9/x")
    assert quiet.returncode == 0, quiet.stderr
    assert "warning" not in quiet.stderr, quiet.stderr + up.logs()
