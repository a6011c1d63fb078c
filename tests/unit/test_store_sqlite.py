"""The job store on SQLite, one file every process of ``prodinf up`` writes: reads that
take no lock, a write that waits for the lock and then fails clearly, and a process
forked while one of its threads is in a transaction (a worker's pool, as the worker's
presence thread writes) that can still write."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from prodinf.exceptions import StoreUnavailable
from prodinf.store import JobStore
from prodinf.store import sqlite as store_sqlite
from tests.conftest import fresh_store


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite"


@pytest.fixture
def store(path: Path) -> Iterator[JobStore]:
    found = fresh_store(f"sqlite:///{path}")
    yield found
    found.dispose()


def test_reads_go_on_while_another_connection_holds_the_write_lock(
    store: JobStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_sqlite, "SQLITE_LOCK_WAIT", 1.0)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        # Given another connection holding the write lock, then a page's reads answer
        assert store.counts() == {}
        assert store.find_jobs()["items"] == []
        # and a write waits for the lock, then fails saying the store is unavailable
        with pytest.raises(StoreUnavailable, match="sqlite"), store.transaction() as conn:
            conn.execute(text("CREATE TABLE blocked (x INTEGER)"))
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    # and once the lock is free the write goes through
    with store.transaction() as conn:
        conn.execute(text("CREATE TABLE unblocked (x INTEGER)"))


def test_a_read_only_transaction_refuses_a_write(store: JobStore) -> None:
    with pytest.raises(StoreUnavailable), store.reading() as session:
        session.execute(text("CREATE TABLE written (x INTEGER)"))


def test_a_process_forked_while_a_thread_is_in_a_transaction_can_write(store: JobStore) -> None:
    # Given a thread of this process in a write transaction
    inside = threading.Event()

    def write() -> None:
        with store.transaction() as conn:
            conn.execute(text("CREATE TABLE parent_wrote (x INTEGER)"))
            inside.set()
            time.sleep(0.5)

    writer = threading.Thread(target=write)
    writer.start()
    assert inside.wait(10)
    # when this process forks meanwhile (as a worker's pool does)
    pid = os.fork()
    if pid == 0:  # the child: write, with a short wait for the lock
        code = 1
        try:
            store_sqlite.SQLITE_LOCK_WAIT = 3.0
            store.forget_connections()
            with store.transaction() as conn:
                conn.execute(text("CREATE TABLE child_wrote (x INTEGER)"))
            code = 0
        finally:
            os._exit(code)
    writer.join()
    _, status = os.waitpid(pid, 0)
    # then the child wrote (forked mid-transaction, it would find the write lock held
    # for ever by a thread it does not have)
    assert os.waitstatus_to_exitcode(status) == 0
    with store.reading() as session:
        tables = set(session.scalars(text("SELECT name FROM sqlite_master WHERE type='table'")))
    assert {"parent_wrote", "child_wrote"} <= tables
