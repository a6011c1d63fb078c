"""Dataset metadata tables: datasets and their registrations (``register_metadata``).

On ``Base.metadata`` so the job store's migrations (0004) create them and the
schema check covers them; a separate ``PRODINF_METADATA_URL`` database gets just
these two tables, created on first use. Registrations are never updated or
deleted: a dataset's history is its registrations in order.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from prodinf.store.models import Base
from prodinf.store.types import JSONType, UTCDateTime

__all__ = ["DATASET_TABLES", "dataset_registrations", "datasets"]

datasets = Table(
    "prodinf_datasets",
    Base.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("type", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("name", "type"),
)

dataset_registrations = Table(
    "prodinf_dataset_registrations",
    Base.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", Integer, ForeignKey("prodinf_datasets.id"), nullable=False, index=True),
    # Unique: the job that wrote a registration finds it when its step runs again.
    Column("job_id", String(36), nullable=True, unique=True),
    Column("database_uri", String(500), nullable=False),
    Column("database_name", String(200), nullable=False),
    Column("engine", String(20), nullable=False),
    Column("release", Integer, nullable=True),
    Column("assembly", String(100), nullable=True),
    Column("size_bytes", BigInteger, nullable=True),
    Column("total_rows", BigInteger, nullable=False),
    Column("tables", JSONType, nullable=False),
    Column("meta", JSONType, nullable=False),
    Column("source", String(500), nullable=True),
    Column("comment", Text, nullable=True),
    Column("events", JSONType, nullable=False),
    Column("registered_at", UTCDateTime, nullable=False),
)

#: Both tables, parents first.
DATASET_TABLES = (datasets, dataset_registrations)
