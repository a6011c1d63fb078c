"""Databases that jobs work on: URIs, sample datasets, row counts and checksums."""

from prodinf.databases.checksum import TableStats, table_stats
from prodinf.databases.sample import build_core_like, dataset_uri
from prodinf.databases.uri import DatabaseURI, DatabaseUriField, database_errors

__all__ = [
    # URIs
    "DatabaseURI",
    "DatabaseUriField",
    "database_errors",
    # row counts and checksums
    "TableStats",
    "table_stats",
    # generated datasets
    "build_core_like",
    "dataset_uri",
]
