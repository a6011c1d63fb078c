"""Tables copied side by side: each one loaded, then given its keys and indexes, then measured.

Most of a copy's time is work the servers do per table: loading its rows, sorting
them into each index, reading them back for the checksum. Done phase by phase over
the whole database, each phase waits for its slowest table and runs its statements
one after the other. Here a table goes on to its keys and its checksum as soon as
its rows are in, ``workers`` tables at a time, largest first: one table's indexes
are built and its copy measured while another table loads.

The target's checksum of a table is taken once its rows are committed, and nothing
writes its rows after that: it is the copy's final content. On PostgreSQL it is
taken on another connection while the table's indexes are built (an index build
lets others read the table; its primary key is built as an index, then made the
key); elsewhere after them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Index, MetaData, Table

from prodinf.databases.checksum import Hashes, TableStats, table_checksum
from prodinf.databases.schema import add_primary_key, create_indexes

__all__ = ["Load", "Pipeline", "TableCopy"]

#: Loads the rows of a table the target does not have yet: ``load(source table, target
#: table, on_rows, stop)`` returns the rows then on the target. It tells ``on_rows`` the
#: rows on the target as they commit, and ends early (resumably) when ``stop()`` is true.
Load = Callable[[Table, Table, Callable[[int], None], Callable[[], bool]], int]


@dataclass
class TableCopy:
    """One table's copy: its keys and indexes added, its checksum, seconds per phase."""

    name: str
    stats: TableStats | None = None
    primary_key: bool = False
    indexes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """Copies the tables of ``source`` (reflected as ``md``) into ``tmd``'s on ``target``.

    ``indexes`` are the secondary indexes to build per table (``plan_indexes``),
    ``order`` the tables' names in the order to start them. ``stop`` (set by the
    caller's ``poll`` or on an error) ends the loads between batches and starts no
    more tables. ``portable`` and ``hashes``: the form of the checksums taken
    (``prodinf.databases.checksum.table_checksum``).
    """

    def __init__(
        self,
        source: Engine,
        target: Engine,
        md: MetaData,
        tmd: MetaData,
        *,
        load: Load,
        indexes: dict[str, list[Index]],
        order: Sequence[str],
        workers: int,
        portable: bool,
        hashes: Hashes = "text",
    ) -> None:
        self.source, self.target, self.md, self.tmd = source, target, md, tmd
        self.load, self.indexes, self.order = load, indexes, list(order)
        self.workers = max(1, min(workers, len(self.order)))
        self.portable, self.hashes = portable, hashes
        self.stop = threading.Event()
        #: Rows on the target so far, per table started (for progress).
        self.rows: dict[str, int] = {}
        #: Tables done, by name.
        self.done: dict[str, TableCopy] = {}

    def run(self, poll: Callable[[], None], every: float) -> dict[str, TableCopy]:
        """Copy every table; ``poll()`` runs here every ``every`` seconds meanwhile.

        Returns the tables done (all of them unless ``stop`` was set). An error in
        any table stops the others after their current batch and is raised here.
        """
        error: BaseException | None = None
        with (
            ThreadPoolExecutor(self.workers, thread_name_prefix="copy") as pool,
            ThreadPoolExecutor(self.workers, thread_name_prefix="copy-measure") as measurer,
        ):
            self._measurer = measurer
            pending: set[Future[Any]] = {pool.submit(self._table, n) for n in self.order}
            while pending:
                finished, pending = wait(pending, timeout=every, return_when=FIRST_COMPLETED)
                for future in finished:
                    if not future.cancelled() and future.exception() and error is None:
                        error = future.exception()
                        self.stop.set()
                if error is None and not self.stop.is_set():
                    try:
                        poll()
                    except BaseException:
                        self.stop.set()
                        raise
                if self.stop.is_set():
                    for future in pending:
                        future.cancel()
        if error is not None:
            raise error
        return self.done

    def _measure(self, name: str, since: float) -> tuple[TableStats, float]:
        """The target's checksum of ``name``, and the seconds it took."""
        with self.target.connect() as conn:
            stats = table_checksum(conn, name, portable=self.portable, hashes=self.hashes)
        return stats, time.monotonic() - since

    def _table(self, name: str) -> None:
        if self.stop.is_set():
            return
        src, tgt = self.md.tables[name], self.tmd.tables[name]
        copy = TableCopy(name)
        started = time.monotonic()

        def on_rows(rows: int) -> None:
            self.rows[name] = rows

        self.rows[name] = self.load(src, tgt, on_rows, self.stop.is_set)
        loaded = time.monotonic()
        copy.seconds["load"] = loaded - started
        if self.stop.is_set():
            return  # maybe partly loaded: no keys, no checksum
        # PostgreSQL builds the indexes under locks that let the checksum read the
        # table meanwhile, on another connection (see add_primary_key).
        measuring = (
            self._measurer.submit(self._measure, name, loaded)
            if self.target.dialect.name == "postgresql"
            else None
        )
        try:
            with self.target.begin() as conn:
                copy.primary_key = add_primary_key(conn, src)
                copy.indexes = create_indexes(conn, name, self.indexes.get(name, []))
        finally:
            measured = measuring.result() if measuring is not None else None
        copy.seconds["keys"] = time.monotonic() - loaded
        copy.stats, copy.seconds["checksum"] = measured or self._measure(name, time.monotonic())
        self.rows[name] = copy.stats.rows
        self.done[name] = copy
