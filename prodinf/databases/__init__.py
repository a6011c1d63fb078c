"""Databases that jobs work on: URIs, sample datasets, row counts and checksums."""

from prodinf.databases.checksum import TableStats, table_stats
from prodinf.databases.sample import build_core_like, dataset_uri
from prodinf.databases.uri import DatabaseURI, DatabaseUriField, database_errors

__all__ = [
    "DatabaseURI",
    "DatabaseUriField",
    "TableStats",
    "build_core_like",
    "database_errors",
    "dataset_uri",
    "table_stats",
]
