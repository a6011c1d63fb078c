"""Core-like datasets named as the naming rules expect, and the faults the healthchecks
must find, planted for real in SQLite, PostgreSQL and MariaDB.

Foreign keys are enforced on PostgreSQL and MariaDB, so orphans are planted the way
a bad load makes them: with the checks switched off for the session
(``FOREIGN_KEY_CHECKS=0``, ``session_replication_role = replica``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, NullPool, text

from prodinf.databases.uri import DatabaseURI
from tests.gates import MYSQL_URL, POSTGRES_URL, require
from tests.integration.datasets import Datasets
from tests.sample_data import build_core_like

__all__ = [
    "ORPHANS",
    "PASSWORD",
    "core_named",
    "execute",
    "mariadb_user",
    "plant_faults",
    "postgres_role",
]

#: How many orphan object_xref rows ``plant_faults`` makes.
ORPHANS = 12


def core_named(
    datasets: Datasets,
    engine_name: str,
    *,
    release: int = 115,
    assembly: str = "38",
    dataset: str | None = None,
    **kw: Any,
) -> tuple[str, dict[str, int]]:
    """A core-like database named ``<dataset>_core_<release>_<assembly>`` (unique dataset),
    dropped with ``datasets``; returns ``(uri with credentials, rows per table)``."""
    dataset = dataset or f"hcb{uuid.uuid4().hex[:8]}"
    name = f"{dataset}_core_{release}_{assembly}"
    if engine_name == "sqlite":
        uri = f"sqlite:///{datasets.folder / name}.sqlite"
    else:
        server = POSTGRES_URL if engine_name == "postgresql" else MYSQL_URL
        require("PostgreSQL" if engine_name == "postgresql" else "MariaDB", server)
        uri = DatabaseURI.parse(server).with_database(name).secret()
    datasets.made.append(uri)
    kw.setdefault("species", dataset)
    return uri, build_core_like(uri, release=release, **kw)


def execute(uri: str, *statements: str, unchecked: bool = False) -> None:
    """Run SQL statements in one transaction; ``unchecked``: foreign keys not enforced."""
    parsed = DatabaseURI.parse(uri)
    engine = parsed.create_engine(poolclass=NullPool)
    try:
        with engine.begin() as conn:
            if unchecked:
                _unchecked(conn, parsed.engine_name)
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def _unchecked(conn: Connection, engine_name: str) -> None:
    if engine_name == "mysql":
        conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
    elif engine_name == "postgresql":
        conn.execute(text("SET session_replication_role = replica"))


def plant_faults(uri: str) -> None:
    """Orphan rows, an empty table, a missing meta key and a wrong schema version."""
    execute(
        uri,
        # object_xref 1..12 point at xrefs that do not exist
        f"UPDATE object_xref SET xref_id = object_xref_id + 50000000 "
        f"WHERE object_xref_id <= {ORPHANS}",
        "DELETE FROM translation",
        "DELETE FROM meta WHERE meta_key = 'assembly.name'",
        "UPDATE meta SET meta_value = '114' WHERE meta_key = 'schema_version'",
        unchecked=True,
    )


# -- a user and a role with a password, for the masking tests -------------------------------

#: The password of both.
PASSWORD = "Hc-Secret-8841"


@pytest.fixture
def mariadb_user() -> Iterator[str]:
    """A MariaDB user ``prodinf_hc_b`` with a password and SELECT on every database."""
    require("MariaDB", MYSQL_URL)
    admin = DatabaseURI.parse(MYSQL_URL).server().create_engine(poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(text("DROP USER IF EXISTS 'prodinf_hc_b'@'%'"))
        conn.execute(text(f"CREATE USER 'prodinf_hc_b'@'%' IDENTIFIED BY '{PASSWORD}'"))
        conn.execute(text("GRANT SELECT ON *.* TO 'prodinf_hc_b'@'%'"))
    yield "prodinf_hc_b"
    with admin.begin() as conn:
        conn.execute(text("DROP USER IF EXISTS 'prodinf_hc_b'@'%'"))
    admin.dispose()


@pytest.fixture
def postgres_role(datasets: Datasets) -> Iterator[str]:
    """A PostgreSQL role ``prodinf_hc_b`` with a password (loopback may trust it anyway)."""
    require("PostgreSQL", POSTGRES_URL)
    admin = DatabaseURI.parse(POSTGRES_URL).server().create_engine(poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(text("DROP ROLE IF EXISTS prodinf_hc_b"))
        conn.execute(text(f"CREATE ROLE prodinf_hc_b LOGIN PASSWORD '{PASSWORD}'"))
    yield "prodinf_hc_b"
    datasets.drop_all()  # the grants in the test's databases go with them
    with admin.begin() as conn:
        conn.execute(text("DROP OWNED BY prodinf_hc_b"))
        conn.execute(text("DROP ROLE IF EXISTS prodinf_hc_b"))
    admin.dispose()
