"""The registrations contract for reading datasets back (``MetadataStore.list_datasets``,
``dataset``, ``dataset_types``, ``history``), one suite run on every backend (SQLite,
PostgreSQL, MariaDB): the store's migrated tables hold the registrations, written by
``MetadataStore.register`` as ``register_metadata`` writes them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prodinf.config import Settings
from prodinf.store import JobStore
from prodinf.store.registrations import MetadataStore, Registration

VALUES: dict[str, Any] = {
    "database_uri": "mysql://ana:***@db.example.org/homo_sapiens_core_115_38",
    "database_name": "homo_sapiens_core_115_38",
    "engine": "mysql",
    "release": 115,
    "assembly": "38",
    "size_bytes": 1024,
    "total_rows": 10,
    "tables": {"gene": {"rows": 10, "checksum": "ab"}},
    "meta": {"schema_version": "115"},
    "source": None,
    "comment": None,
}


@pytest.fixture
def metadata(any_store: JobStore, tmp_path: Path) -> Iterator[MetadataStore]:
    """Registrations kept in the migrated store of one backend."""
    url = any_store.engine.url.render_as_string(hide_password=False)
    store = MetadataStore(Settings(home=tmp_path, metadata_url=url))
    yield store
    store.dispose()


def register(
    store: MetadataStore, job_id: str, dataset: str, dataset_type: str, **values: Any
) -> Registration:
    registration, created = store.register(
        job_id=job_id,
        dataset=dataset,
        dataset_type=dataset_type,
        values={**VALUES, **values},
        events=lambda previous: [{"type": "dataset.created" if previous is None else "x"}],
    )
    assert created
    return registration


def test_datasets_are_listed_searched_and_read_back(metadata: MetadataStore) -> None:
    # Given the human core registered twice, then the mouse core and the human variation
    register(metadata, "job-1", "homo_sapiens", "core", release=114)
    register(metadata, "job-2", "homo_sapiens", "core", comment="again")
    register(metadata, "job-3", "mus_musculus", "core", database_name="mus_musculus_core_115_39")
    register(
        metadata,
        "job-4",
        "homo_sapiens",
        "variation",
        database_name="homo_sapiens_variation_115_38",
    )

    # When they are listed, then the most recently registered first, each once
    items, total = metadata.list_datasets()
    assert total == 3
    assert [(d["type"], d["name"], d["registration_count"]) for d in items] == [
        ("variation", "homo_sapiens", 1),
        ("core", "mus_musculus", 1),
        ("core", "homo_sapiens", 2),
    ]
    human = items[2]
    assert (human["latest_release"], human["latest_job_id"]) == (115, "job-2")
    assert human["latest_database"] == "homo_sapiens_core_115_38"

    # And searched: by part of a name or a database's name, any case; by type
    def found(**search: Any) -> list[tuple[str, str]]:
        page, count = metadata.list_datasets(**search)
        assert count == len(page)
        return [(d["type"], d["name"]) for d in page]

    assert found(text="MUS") == [("core", "mus_musculus")]
    assert found(text="sapiens_core_115") == [("core", "homo_sapiens")]
    assert found(text="homo_", dataset_type="variation") == [("variation", "homo_sapiens")]
    assert found(text="%") == []
    assert found(text="homo%sapiens") == []
    assert found(dataset_type="rnaseq") == []

    # And paged, the total kept past the last page
    assert [d["name"] for d in metadata.list_datasets(limit=1, offset=1)[0]] == ["mus_musculus"]
    assert metadata.list_datasets(limit=2, offset=5) == ([], 3)

    # And one dataset, its history oldest first, and the types there are
    one = metadata.dataset("homo_sapiens", "core")
    assert one is not None and one["registration_count"] == 2
    assert metadata.dataset("homo_sapiens", "rnaseq") is None
    assert [r.job_id for r in metadata.history("homo_sapiens", "core")] == ["job-1", "job-2"]
    assert metadata.dataset_types() == ["core", "variation"]
