"""``prodinf up`` as a real process, for the tests that run it as a user does."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.waiting import wait_until

__all__ = ["PRODINF", "Up", "processes_of", "running_up"]

UP_URL = re.compile(r"prodinf is up at (http://\S+)")
#: The installed ``prodinf`` script beside this interpreter, as a user's shell finds it.
SCRIPT = Path(sys.executable).with_name("prodinf")
PRODINF = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "prodinf.cli"]


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


@contextlib.contextmanager
def running_up(
    env: dict[str, str], cwd: Path, home: Path, output_file: Path, *args: str
) -> Iterator[Up]:
    """``prodinf up --port 0 ARGS`` started in ``cwd`` with ``env`` (its home is
    ``home``), serving at ``up.url``; stopped, and anything it left killed, at the end."""
    with output_file.open("wb") as out:
        proc = subprocess.Popen(
            [*PRODINF, "up", "--port", "0", *args],  # port 0: the OS picks one, up prints it
            env=env,
            cwd=cwd,
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
