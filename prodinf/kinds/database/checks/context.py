"""What a healthcheck sees: a connection, the dataset's name, and SQL helpers.

Checks run as SQL in the database: a check counts its problem rows with
``COUNT(*)`` and fetches at most :data:`MAX_EXAMPLES` of them with ``LIMIT``, so
a check on a table of millions of rows moves two small answers, never the rows.
:meth:`CheckContext.problems` does both for any query that selects problem rows.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, MetaData, Select, Table, func, inspect, select, text
from sqlalchemy.engine import Inspector

from prodinf.databases.naming import DatasetName

__all__ = ["MAX_EXAMPLES", "CheckContext", "Finding", "json_value"]

#: Example rows a check reports, at most.
MAX_EXAMPLES = 10


@dataclass
class Finding:
    """What one check found: how many problems, up to ten examples, and a sentence.

    ``passed`` defaults to "no problems found".
    """

    count: int
    examples: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    passed: bool | None = None

    @property
    def ok(self) -> bool:
        return self.count == 0 if self.passed is None else self.passed


class CheckContext:
    """One database, open for the duration of a healthcheck run."""

    def __init__(
        self,
        conn: Connection,
        *,
        engine_name: str,
        database: str,
        dataset: DatasetName | None,
    ) -> None:
        self.conn = conn
        #: ``mysql``, ``postgresql`` or ``sqlite``.
        self.engine_name = engine_name
        self.database = database
        #: What the naming rules say about the database's name (None: no rule matched).
        self.dataset = dataset
        self._inspector: Inspector | None = None
        self._tables: set[str] | None = None
        self._metadata = MetaData()

    # -- the schema -----------------------------------------------------------------------

    @property
    def inspector(self) -> Inspector:
        if self._inspector is None:
            self._inspector = inspect(self.conn)
        return self._inspector

    def table_names(self) -> set[str]:
        """Every table in the database (read once per run)."""
        if self._tables is None:
            self._tables = set(self.inspector.get_table_names())
        return self._tables

    def table(self, name: str) -> Table:
        """The table ``name``, reflected once per run."""
        existing = self._metadata.tables.get(name)
        if existing is not None:
            return existing
        return Table(name, self._metadata, autoload_with=self.conn)

    def quote(self, name: str) -> str:
        """``name`` quoted as an identifier for this database."""
        return self.conn.dialect.identifier_preparer.quote(name)

    # -- queries --------------------------------------------------------------------------

    def count(self, query: Select[Any] | str, params: dict[str, Any] | None = None) -> int:
        """How many rows ``query`` selects, counted by the database."""
        counted: Any
        if isinstance(query, str):
            counted = text(f"SELECT COUNT(*) FROM ({query}) problems")
        else:
            counted = select(func.count()).select_from(query.subquery("problems"))
        return int(self.conn.execute(counted, params or {}).scalar_one())

    def examples(
        self, query: Select[Any] | str, params: dict[str, Any] | None = None, limit: int = 10
    ) -> list[dict[str, Any]]:
        """The first ``limit`` rows ``query`` selects, as JSON-ready mappings."""
        limited: Any
        if isinstance(query, str):
            limited = text(f"SELECT * FROM ({query}) problems LIMIT {int(limit)}")
        else:
            limited = query.limit(limit)
        rows = self.conn.execute(limited, params or {}).mappings().all()
        return [{str(k): json_value(v) for k, v in row.items()} for row in rows]

    def problems(
        self,
        query: Select[Any] | str,
        *,
        what: str = "problem rows",
        params: dict[str, Any] | None = None,
    ) -> Finding:
        """A finding from a query selecting problem rows: its count and first examples."""
        count = self.count(query, params)
        examples = self.examples(query, params, MAX_EXAMPLES) if count else []
        return Finding(count, examples, f"{count} {what}" if count else f"no {what}")


def json_value(value: Any) -> Any:
    """``value`` as JSON can hold it (dates as ISO text, decimals as text, bytes as base64)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID | dt.timedelta):
        return str(value)
    return str(value)
