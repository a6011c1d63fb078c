"""Where registrations are kept: the job store (migrated) or a separate database, on SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prodinf.config import Settings
from prodinf.exceptions import PermanentError, StoreUnavailable
from prodinf.store.registrations import MetadataStore, Registration

VALUES: dict[str, Any] = {
    "database_uri": "sqlite:///x/homo_sapiens_core_115_38.sqlite",
    "database_name": "homo_sapiens_core_115_38",
    "engine": "sqlite",
    "release": 115,
    "assembly": "38",
    "size_bytes": 1024,
    "total_rows": 10,
    "tables": {"gene": {"rows": 10, "checksum": "ab"}},
    "meta": {"schema_version": "115"},
    "source": None,
    "comment": None,
}


def register(store: MetadataStore, job_id: str) -> tuple[Registration, bool]:
    seen: list[Registration | None] = []

    def events(previous: Registration | None) -> list[dict[str, Any]]:
        seen.append(previous)
        return [{"type": "dataset.created" if previous is None else "dataset.updated"}]

    return store.register(
        job_id=job_id, dataset="homo_sapiens", dataset_type="core", values=VALUES, events=events
    )


def test_a_separate_database_gets_its_tables_on_first_use(tmp_path: Path) -> None:
    """Given a separate metadata database, when a job registers a dataset twice and another
    job once, then the tables were made on first use, a job's registration is kept
    once, and the history holds both, oldest first.
    """
    store = MetadataStore(Settings(home=tmp_path, metadata_url=f"sqlite:///{tmp_path}/meta.db"))
    try:
        first, new = register(store, "job-1")
        again, again_new = register(store, "job-1")  # the same job: the same registration
        second, _ = register(store, "job-2")
        history = store.history("homo_sapiens", "core")
    finally:
        store.dispose()

    assert new and not again_new
    assert again.id == first.id
    assert first.values["events"] == [{"type": "dataset.created"}]
    assert second.values["events"] == [{"type": "dataset.updated"}]
    assert [h.id for h in history] == [first.id, second.id]
    assert history[0].to_dict()["registered_at"].endswith("+00:00")


def test_a_job_store_without_the_tables_says_to_upgrade(tmp_path: Path) -> None:
    """Given a job store never migrated, when a dataset is registered, then it fails
    permanently saying to run prodinf db upgrade.
    """
    store = MetadataStore(Settings(home=tmp_path))  # the store exists but was never migrated
    try:
        with pytest.raises(PermanentError, match="run `prodinf db upgrade`"):
            register(store, "job-1")
    finally:
        store.dispose()


def test_a_metadata_database_that_cannot_be_opened_is_transient(tmp_path: Path) -> None:
    """Given a metadata database that cannot be opened, when a dataset is registered, then
    the store is unavailable (transient), named without a secret.
    """
    url = f"sqlite:///{tmp_path}/no/such/folder/meta.db"
    store = MetadataStore(Settings(home=tmp_path, metadata_url=url))
    try:
        with pytest.raises(StoreUnavailable, match="metadata store sqlite:///"):
            register(store, "job-1")
    finally:
        store.dispose()
