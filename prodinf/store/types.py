"""Column types that behave the same on SQLite, PostgreSQL and MariaDB/MySQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Table
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator

__all__ = ["JSONType", "UTCDateTime", "insert_if_absent", "utcnow"]


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC with microseconds everywhere; returns aware UTC datetimes.

    MySQL's DATETIME has no zone and drops microseconds unless asked; SQLite
    has no zone at all. Storing naive UTC keeps comparisons in SQL correct on all three.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


#: JSON everywhere; JSONB on PostgreSQL.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


def insert_if_absent(conn: Connection, table: Table, key: str) -> Insert:
    """An INSERT into ``table`` that does nothing when its unique column ``key`` is taken
    (waiting for a transaction that is inserting it to end), on every store; the caller
    adds ``.values(...)``. A ``SELECT ... FOR UPDATE`` of the row may follow it."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=[key])
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])
    # MySQL/MariaDB: a no-op update, not INSERT IGNORE, which would take a shared lock
    # on an existing row that the SELECT ... FOR UPDATE after it then deadlocks upgrading.
    insert = mysql.insert(table)
    return insert.on_duplicate_key_update({key: insert.inserted[key]})
