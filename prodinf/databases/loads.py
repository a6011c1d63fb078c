"""How a copy loads one table's rows: the method for a pair of databases, and its loader.

``native``: same engine with the client tools installed, one table per transaction
(``prodinf.databases.native``; a small PostgreSQL table through prodinf's own
connections). ``postgres-copy``: PostgreSQL to PostgreSQL without ``psql``, streamed
as ``COPY`` text in committed key ranges. ``stream``: any other pair, in committed
batches in key order (``prodinf.databases.transfer``).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, Table

from prodinf.databases import transfer
from prodinf.databases.native import native_table, native_tools
from prodinf.databases.pipeline import Load
from prodinf.databases.transfer import (
    copy_table,
    copy_table_postgres,
    copy_whole_postgres,
    count_rows,
    referred_to,
)
from prodinf.databases.uri import DatabaseURI

__all__ = ["SMALL_TABLE_BYTES", "copy_method", "loader"]

#: PostgreSQL tables smaller than this (bytes on the source) are copied through
#: prodinf's own connections rather than two ``psql`` processes, whose starts cost
#: more than the rows of a small table (``transfer.copy_whole_postgres``).
SMALL_TABLE_BYTES = 1 << 20

OnRows = Callable[[int], None]
Stop = Callable[[], bool]


def copy_method(src: DatabaseURI, tgt: DatabaseURI, requested: str) -> str:
    """How the rows go over: ``native``, ``postgres-copy`` or ``stream`` (``requested``:
    ``auto`` or ``stream``)."""
    engine = src.engine_name
    same_engine = engine == tgt.engine_name
    if same_engine and requested == "auto" and native_tools(engine):
        return "native"
    if same_engine and engine == "postgresql":
        return "postgres-copy"
    return "stream"


def loader(
    src: DatabaseURI,
    tgt: DatabaseURI,
    source: Engine,
    target: Engine,
    method: str,
    batch: int,
    snapshot: str | None,
    sizes: dict[str, int],
) -> Load:
    """How one table's rows are loaded, by ``method`` (native: from ``snapshot``; a
    PostgreSQL table under ``SMALL_TABLE_BYTES`` in ``sizes`` through this process)."""
    if method != "native":
        copy = copy_table_postgres if method == "postgres-copy" else copy_table

        def stream(src_table: Table, tgt_table: Table, on_rows: OnRows, stop: Stop) -> int:
            return copy(
                source, target, src_table, tgt_table, batch=batch, on_batch=on_rows, stop=stop
            )

        return stream

    def native(src_table: Table, tgt_table: Table, on_rows: OnRows, stop: Stop) -> int:
        # All of it, or (after a crash) all of it again: one transaction per table.
        done = count_rows(target, tgt_table)
        if done and done == count_rows(source, src_table):
            return done
        # PostgreSQL empties the table in the loading transaction (see psql_table),
        # unless a foreign key refers to it (a job run again after its constraints).
        freeze = target.dialect.name == "postgresql" and not referred_to(target, tgt_table.name)
        if done and not freeze:
            with target.begin() as conn:
                conn.execute(tgt_table.delete())
        transfer.before_commit(src_table.name, 0)  # the fault-injection seam, looked up late
        columns = [c.name for c in src_table.columns]
        name = src_table.name
        if src.engine_name == "postgresql" and sizes.get(name, 0) < SMALL_TABLE_BYTES:
            copy_whole_postgres(source, target, name, columns, freeze=freeze, snapshot=snapshot)
        else:
            native_table(src, tgt, name, columns, freeze=freeze, snapshot=snapshot)
        return 0  # counted by the checksum that follows

    return native
