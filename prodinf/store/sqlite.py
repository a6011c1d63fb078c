"""The job store on SQLite: WAL, a fair wait for the write lock, and no fork mid-transaction.

Every process of ``prodinf up`` (the portal's threads, each worker and its pool, the
scheduler) writes one SQLite file, so three things matter that a server database
does for itself:

- Readers never block: WAL, and transactions that only read (``JobStore.reading``)
  begin a snapshot that takes no lock. A writer takes the write lock as it begins
  (``BEGIN IMMEDIATE``), so writers queue there instead of failing mid-transaction.
- The wait for the write lock is fair (:func:`_begin_writing`).
- No process forks while one of its threads is in a transaction (:class:`_ForkGate`).
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

__all__ = ["SQLITE_LOCK_WAIT", "configure_sqlite"]

log = logging.getLogger(__name__)

#: Seconds a transaction waits for the store's write lock before it fails, and a fork
#: for this process's transactions to end.
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
            _gate.enter()
            conn.info[_GATED] = True
        if reads_only:
            conn.exec_driver_sql("BEGIN")
        else:
            _begin_writing(conn, wait_ms)

    @event.listens_for(engine, "checkin")
    def on_checkin(_dbapi_conn: Any, record: Any) -> None:
        if record.info.pop(_GATED, False):  # its transactions have ended
            _gate.leave()


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


class _ForkGate:
    """Counts this process's open SQLite transactions; a fork waits until none is open.

    SQLite keeps the locks a process's connections hold on a database (the write
    lock, a reader's mark in the WAL index) in that process's memory. A child forked
    while a thread of its parent is in a transaction inherits that record, but not
    the thread that would release it: in the child the write lock is held for ever,
    so every write it tries waits 30 s and fails. A worker's pool process forked as
    the worker's presence thread wrote its row failed every job it took, for minutes,
    while its sibling ran them all.

    So a fork (``os.register_at_fork``) waits for the open transactions of the other
    threads to end, at most ``SQLITE_LOCK_WAIT``, and none begins until it is done. A
    thread already in a transaction may open another (it is not held up by a fork
    waiting for it).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = 0
        self._forking = False
        self._mine = threading.local()

    def enter(self) -> None:
        depth = getattr(self._mine, "depth", 0)
        with self._cond:
            if depth == 0:
                while self._forking:
                    self._cond.wait()
            self._open += 1
        self._mine.depth = depth + 1

    def leave(self) -> None:
        self._mine.depth = max(0, getattr(self._mine, "depth", 0) - 1)
        with self._cond:
            self._open = max(0, self._open - 1)
            if self._open == 0:
                self._cond.notify_all()

    def before_fork(self) -> None:
        self._cond.acquire()  # held through the fork: no transaction begins meanwhile
        self._forking = True
        own = getattr(self._mine, "depth", 0)
        if not self._cond.wait_for(lambda: self._open <= own, timeout=SQLITE_LOCK_WAIT):
            log.warning(
                "forking with %d SQLite transaction(s) still open in other threads: the "
                "new process may find the store locked",
                self._open - own,
            )

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()

    def after_fork_in_child(self) -> None:
        self.__init__()  # type: ignore[misc]  # only the forking thread lives on


_gate = _ForkGate()
os.register_at_fork(
    before=_gate.before_fork,
    after_in_parent=_gate.after_fork_in_parent,
    after_in_child=_gate.after_fork_in_child,
)
