"""One PostgreSQL snapshot shared by several connections: what a copy reads and what it measures.

``held_snapshot`` opens a read-only ``REPEATABLE READ`` transaction on the source,
exports its snapshot (``pg_export_snapshot()``) and keeps it open while the copy
runs; each connection that loads a table or takes its checksum first imports it
(``SET TRANSACTION SNAPSHOT``; ``psql`` does the same in ``native.psql_table``).
So the source's checksums can be taken while the rows are still being copied, and
they are of exactly the rows copied: a change committed to the source meanwhile is
in neither, as ``pg_dump`` sees one moment of a database over many tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

__all__ = ["BEGIN_SNAPSHOT", "held_snapshot", "set_snapshot", "use_snapshot"]

#: Begins a transaction that can export or import a snapshot (read only: it only reads).
BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

# What pg_export_snapshot() returns, e.g. 00000003-0000001B-1 (a utility statement
# takes no bind parameter: the id goes into the SQL text, so it is checked first).
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+")


@contextmanager
def held_snapshot(engine: Engine) -> Iterator[str | None]:
    """PostgreSQL: the id of a snapshot of ``engine``'s database, valid inside the block.

    Elsewhere ``None`` (MariaDB cannot share a snapshot between connections).
    """
    if engine.dialect.name != "postgresql":
        yield None
        return
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        snapshot = str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one())
        try:
            yield snapshot
        finally:
            conn.rollback()


def set_snapshot(snapshot: str) -> str:
    """The statement that makes a transaction see the database as ``snapshot`` does
    (the first of the transaction): the id is checked, as it goes into the SQL text."""
    if not _SNAPSHOT_ID.fullmatch(snapshot):
        raise ValueError(f"not a snapshot id: {snapshot!r}")
    return f"SET TRANSACTION SNAPSHOT '{snapshot}'"


def use_snapshot(conn: Connection, snapshot: str) -> Connection:
    """Begin a transaction on ``conn`` that sees the database as ``snapshot`` does."""
    statement = set_snapshot(snapshot)
    conn = conn.execution_options(isolation_level="REPEATABLE READ")
    # Before the transaction's first query, as SET TRANSACTION SNAPSHOT must be.
    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    conn.exec_driver_sql(statement)
    return conn
