"""The job store on SQLite: WAL, a fair wait for the write lock, and no fork mid-transaction.

Every process of ``prodinf up`` (the portal's threads, each worker and its pool, the
scheduler) writes one SQLite file, so three things matter that a server database
does for itself:

- Readers never block: WAL, and transactions that only read (``JobStore.reading``)
  begin a snapshot that takes no lock. A writer takes the write lock as it begins
  (``BEGIN IMMEDIATE``), so writers queue there instead of failing mid-transaction.
- The wait for the write lock is fair (:func:`_begin_writing`).
- No process forks while one of its threads is in a transaction (:mod:`prodinf.forks`):
  SQLite keeps the locks a process holds on a database (the write lock, a reader's
  mark in the WAL index) in that process's memory, so a child forked mid-transaction
  would find the write lock held for ever, by a thread it does not have.
"""

from __future__ import annotations

import random
import sqlite3
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from prodinf import forks

__all__ = ["SQLITE_LOCK_WAIT", "configure_sqlite"]

#: Seconds a transaction waits for the store's write lock before it fails.
SQLITE_LOCK_WAIT = 30.0

#: Marks a pooled connection whose transaction the fork gate counts.
_GATED = "prodinf_fork_gate"


def configure_sqlite(engine: Engine, *, reads_only: bool = False) -> None:
    """Set ``engine`` (on a SQLite file) up as the module says. A ``reads_only`` engine
    begins plain (deferred) transactions, and refuses writes (``query_only``)."""
    wait_ms = int(SQLITE_LOCK_WAIT * 1000)

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let us issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={wait_ms}")
        if reads_only:
            cursor.execute("PRAGMA query_only=1")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        if not conn.info.get(_GATED):  # a connection's first transaction since checkout
            forks.enter()
            conn.info[_GATED] = True
        if reads_only:
            conn.exec_driver_sql("BEGIN")
        else:
            _begin_writing(conn, wait_ms)

    @event.listens_for(engine, "checkin")
    def on_checkin(_dbapi_conn: Any, record: Any) -> None:
        if record.info.pop(_GATED, False):  # its transactions have ended
            forks.leave()


def _begin_writing(conn: Connection, wait_ms: int) -> None:
    """``BEGIN IMMEDIATE``, tried again every millisecond or so for ``SQLITE_LOCK_WAIT``.

    Not SQLite's own busy handler for this wait: it sleeps longer the longer it has
    waited (100 ms between tries after the first few), so under a steady stream of
    writers from many processes, the one that has waited longest is the least likely
    to get the lock. Tries at one pace, with jitter, give every waiter the same chance
    at each release.
    """
    deadline = time.monotonic() + SQLITE_LOCK_WAIT
    pragmas = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    pragmas.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                busy = isinstance(exc.orig, sqlite3.OperationalError) and _busy(exc.orig)
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(random.uniform(0.0002, 0.002))
    finally:
        pragmas.execute(f"PRAGMA busy_timeout={wait_ms}")
        pragmas.close()


def _busy(exc: sqlite3.OperationalError) -> bool:
    """True if SQLite refused for a lock another connection holds (SQLITE_BUSY)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == sqlite3.SQLITE_BUSY) or "locked" in str(exc)
