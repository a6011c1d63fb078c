"""No fork cuts a thread's work in two: a process forked (as a worker's pool forks its
processes) while another thread opens, uses and closes SQLite connections can open its
own, and a worker's pool forks no process while the worker's own thread makes a pass.

Without the gate, about one child in four of the first test hangs for ever on its first
SQLite call: it inherits a mutex of SQLite's C library held by a thread it does not
have. A worker's pool process forked so took a job's message and never ran it."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from prodinf import forks
from prodinf.celery_app import WorkerPresence, create_celery
from prodinf.config import Settings
from prodinf.store import workers

FORKS = 100


def _child_exit(pid: int, within: float) -> int | None:
    """The exit code of child ``pid``, or None if it has not exited ``within`` seconds
    (it is then killed)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def test_processes_forked_while_a_thread_opens_and_closes_sqlite_connections_can_use_sqlite(
    tmp_path: Path,
) -> None:
    path = tmp_path / "churn.sqlite"
    with sqlite3.connect(path) as made:
        made.execute("PRAGMA journal_mode=WAL")
        made.execute("CREATE TABLE t (x INTEGER)")
    stop = threading.Event()

    def churn() -> None:  # what a worker's presence thread does, as fast as it can
        while not stop.is_set():
            with forks.no_fork():
                conn = sqlite3.connect(path, timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("INSERT INTO t VALUES (1)")
                conn.commit()
                conn.close()

    # Given a thread that opens, writes and closes SQLite connections without a pause
    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    outcomes = []
    try:
        # when this process forks again and again meanwhile
        for _ in range(FORKS):
            pid = os.fork()
            if pid == 0:  # the child: read the file, as a pool process's first task does
                code = 1
                try:
                    conn = sqlite3.connect(path, timeout=3)
                    conn.execute("SELECT count(*) FROM t").fetchone()
                    conn.close()
                    code = 0
                finally:
                    os._exit(code)
            outcomes.append(_child_exit(pid, within=10))
    finally:
        stop.set()
        thread.join(10)
    # then every child read it at once: none hung, none found the file locked
    assert outcomes == [0] * FORKS, f"{outcomes.count(None)} hung, of {FORKS}"


def test_a_workers_pool_forks_no_process_while_the_workers_thread_makes_a_pass(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker's presence thread whose pass takes a while (a sleep stands in for
    # a slow store: when a fork lands mid-pass cannot be arranged otherwise)
    began, ended = threading.Event(), threading.Event()

    def slow_seen(*_args: object) -> None:
        began.set()
        time.sleep(0.5)
        ended.set()

    monkeypatch.setattr(workers, "seen", slow_seen)
    monkeypatch.setattr(workers, "forget", lambda *_args: None)
    worker = SimpleNamespace(app=create_celery(settings), hostname="handover@here")
    step = WorkerPresence(worker)
    step.start(worker)
    try:
        assert began.wait(10)
        # when the pool forks a process during the pass
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child says whether the pass had ended before it was made
            os.write(write, b"ended" if ended.is_set() else b"mid-pass")
            os._exit(0)
        os.close(write)
        seen = os.read(read, 16)
        os.close(read)
        assert _child_exit(pid, within=10) == 0
    finally:
        step.stop(worker)
    # then the fork waited for the pass to end
    assert seen == b"ended"
