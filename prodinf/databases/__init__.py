"""Databases that jobs work on: URIs, row counts and checksums, schemas, table copies."""

from prodinf.databases.checksum import TableStats, table_stats
from prodinf.databases.uri import DatabaseURI, DatabaseUriField, database_errors

__all__ = [
    "DatabaseURI",
    "DatabaseUriField",
    "TableStats",
    "database_errors",
    "table_stats",
]
