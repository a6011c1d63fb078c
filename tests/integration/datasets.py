"""Core-like datasets on real servers for the database kinds' tests.

Each dataset is a uniquely named database (so two developers' runs and CI can
share the servers), built by ``tests.sample_data.build_core_like`` and
dropped when the fixture that made it ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from prodinf.databases.uri import DatabaseURI
from tests.gates import MYSQL_URL, POSTGRES_URL, require
from tests.sample_data import build_core_like

#: The engines a dataset can be built on, as pytest params.
ENGINES = ["sqlite", "postgresql", "mysql"]


class MakeCoreDb(Protocol):
    def __call__(self, engine_name: str, **kw: Any) -> tuple[str, dict[str, int]]: ...


def new_dataset_uri(engine_name: str, folder: Path, prefix: str = "prodinf_ds") -> str:
    """A URI for a database that does not exist yet, with a unique name (server checked)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    if engine_name == "sqlite":
        return f"sqlite:///{folder / name}.sqlite"
    server = POSTGRES_URL if engine_name == "postgresql" else MYSQL_URL
    require("PostgreSQL" if engine_name == "postgresql" else "MariaDB", server)
    return DatabaseURI.parse(server).with_database(name).secret()


class Datasets:
    """Builds datasets and remembers every database URI to drop at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: list[str] = []

    def uri(self, engine_name: str, prefix: str = "prodinf_ds") -> str:
        """A fresh unique URI, dropped at teardown (for a copy's target, say)."""
        uri = new_dataset_uri(engine_name, self.folder, prefix)
        self.made.append(uri)
        return uri

    def build(self, engine_name: str, **kw: Any) -> tuple[str, dict[str, int]]:
        uri = self.uri(engine_name)
        return uri, build_core_like(uri, **kw)

    def drop_all(self) -> None:
        for uri in self.made:
            DatabaseURI.parse(uri).drop()


@pytest.fixture
def datasets(tmp_path: Path) -> Iterator[Datasets]:
    """Fresh uniquely named databases for one test, all dropped at its end."""
    made = Datasets(tmp_path)
    yield made
    made.drop_all()


@pytest.fixture
def make_core_db(datasets: Datasets) -> MakeCoreDb:
    """``make_core_db("mysql", genes=..., release=...)`` -> ``(uri, rows per table)``.

    A new core-like database (about 114,000 rows by default) for this test only,
    dropped at its end: for tests that change the data (plant faults).
    """
    return datasets.build


@pytest.fixture(scope="module", params=ENGINES)
def core_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, int]]]:
    """``(uri, rows per table)`` of a core-like database on each engine, shared by a module.

    Tests must not change it; use ``make_core_db`` for one to modify.
    """
    made = Datasets(tmp_path_factory.mktemp("core_db"))
    try:
        yield made.build(request.param)
    finally:
        made.drop_all()
