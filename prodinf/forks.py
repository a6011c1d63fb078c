"""No fork while another thread of this process is halfway through something.

A forked child has only the thread that forked. Whatever the parent's other threads
held at that instant stays held in the child for ever, by nobody: a mutex of SQLite's C
library as a connection opens or closes, the write lock of a transaction, a module
lock mid-import. A worker's pool process forked as the worker's presence thread opened
its store connection hung on the first task it took: the message taken, the job never
run, sent again only by the reconciler five minutes later.

So work that a fork must not cut in two runs inside :func:`no_fork`. A fork of this
process (``os.fork``: billiard's pool starting or replacing a process) waits until no
other thread is inside one, at most :data:`FORK_WAIT`, and no thread enters one until
it is done. A thread already inside one may enter again (it is not held up by a fork
waiting for it), and a thread that forks from inside one is not waited for.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["FORK_WAIT", "enter", "leave", "no_fork"]

log = logging.getLogger(__name__)

#: Seconds a fork waits for the other threads to leave :func:`no_fork`.
FORK_WAIT = 30.0


class _ForkGate:
    """Counts the threads inside :func:`no_fork`; a fork waits until none is."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inside = 0
        self._forking = False
        self._mine = threading.local()

    def enter(self) -> None:
        depth = getattr(self._mine, "depth", 0)
        with self._cond:
            if depth == 0:
                while self._forking:
                    self._cond.wait()
            self._inside += 1
        self._mine.depth = depth + 1

    def leave(self) -> None:
        self._mine.depth = max(0, getattr(self._mine, "depth", 0) - 1)
        with self._cond:
            self._inside = max(0, self._inside - 1)
            if self._inside == 0:
                self._cond.notify_all()

    def before_fork(self) -> None:
        self._cond.acquire()  # held through the fork: nobody enters meanwhile
        self._forking = True
        own = getattr(self._mine, "depth", 0)
        if not self._cond.wait_for(lambda: self._inside <= own, timeout=FORK_WAIT):
            log.warning(
                "forking while %d other thread(s) are still mid-work (a store "
                "transaction or connection, a worker's pass): the new process may hang "
                "or find the store locked",
                self._inside - own,
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

#: Enter the gate (as :func:`no_fork` does), for work whose end comes in another call.
enter = _gate.enter
#: Leave the gate entered by :func:`enter`.
leave = _gate.leave


@contextmanager
def no_fork() -> Iterator[None]:
    """No fork of this process cuts what runs inside in two (see the module)."""
    _gate.enter()
    try:
        yield
    finally:
        _gate.leave()
