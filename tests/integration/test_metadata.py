"""``register_metadata`` on real SQLite, PostgreSQL and MariaDB core-like databases.

Given a generated core-like database (~114,000 rows); when it is registered, changed
and registered again (jobs driven in this process by the job runner); then the
registrations keep the dataset's history, and each returns the events its changes
imply: ``dataset.created``, ``dataset.updated`` naming the changed table, and
``new_assembly`` from the configured meta-key rule. A step that runs again does not
register twice, and no password is kept or shown.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.databases.uri import DatabaseURI
from prodinf.exceptions import ValidationError
from prodinf.runtime import Runtime
from prodinf.store import JobRow, StepRow
from prodinf.store.datasets import dataset_registrations
from prodinf.store.registrations import MetadataStore
from tests.conftest import fresh_store
from tests.gates import MYSQL_URL, POSTGRES_URL, require
from tests.integration.core_faults import PASSWORD, core_named, execute
from tests.integration.datasets import ENGINES, Datasets
from tests.waiting import wait_for_job

pytestmark = pytest.mark.integration


def register(rt: Runtime, params: dict[str, Any]) -> dict[str, Any]:
    summary, _ = rt.jobs.submit("register_metadata", params)
    return wait_for_job(rt, summary["id"], drive=True, interval=0.3)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


@pytest.mark.parametrize("engine_name", ENGINES)
def test_registering_a_changed_dataset_yields_the_right_events(
    rt: Runtime, datasets: Datasets, engine_name: str
) -> None:
    # Given a core-like database, registered once
    uri, counts = core_named(datasets, engine_name, assembly="38")
    first = register(rt, {"database_uri": uri, "source": "producer-1", "comment": "first"})

    # Then it is a new dataset, with its name, release, rows per table and size recorded
    assert first["status"] == "succeeded", first["error"]
    created = first["result"]
    assert types(created["events"]) == ["dataset.created"]
    assert created["type"] == "core" and created["release"] == 115
    assert {name: t["rows"] for name, t in created["tables"].items()} == counts
    assert created["total_rows"] == sum(counts.values()) >= 100_000
    assert created["size_bytes"] > 0
    assert created["registered_now"] is True

    # When rows of one table change and the assembly meta key changes
    execute(
        uri,
        "UPDATE gene SET biotype = 'lncRNA' WHERE gene_id <= 5",
        "UPDATE meta SET meta_value = 'GRCh39' WHERE meta_key = 'assembly.default'",
    )
    second = register(rt, {"database_uri": uri})

    # Then the registration says the gene and meta tables changed, and a new assembly
    assert second["status"] == "succeeded", second["error"]
    events = second["result"]["events"]
    assert types(events) == ["dataset.updated", "new_assembly"]
    updated, assembly = events
    assert updated["tables"] == {"changed": ["gene", "meta"], "added": [], "removed": []}
    assert updated["rows"]["gene"] == {"before": counts["gene"], "after": counts["gene"]}
    assert assembly["meta"] == {"assembly.default": {"before": "GRCh38", "after": "GRCh39"}}
    for event in events:
        assert event["dataset"] == created["dataset"]
        assert event["previous_registration"] == created["registration_id"]

    # When nothing changed since, then registering again implies no event
    third = register(rt, {"database_uri": uri})
    assert third["result"]["events"] == []

    # And the history keeps all three, oldest first
    store = MetadataStore(rt.settings)
    try:
        history = store.history(created["dataset"], "core")
    finally:
        store.dispose()
    assert [h.id for h in history] == [
        created["registration_id"],
        second["result"]["registration_id"],
        third["result"]["registration_id"],
    ]
    assert history[0].values["source"] == "producer-1"
    assert history[0].values["comment"] == "first"
    assert types(history[1].values["events"]) == ["dataset.updated", "new_assembly"]


def test_a_register_step_that_runs_again_registers_once(rt: Runtime, datasets: Datasets) -> None:
    # Given a registration job that succeeded
    uri, _ = core_named(datasets, "sqlite", genes=50)
    done = register(rt, {"database_uri": uri})
    job_id = done["id"]
    # ... and its register step made to run again, as after a worker died between
    # writing the registration and recording the step (simulated in the store: the
    # moment cannot be hit for real reliably)
    with rt.store.engine.begin() as conn:
        conn.execute(
            update(StepRow)
            .where(StepRow.job_id == job_id, StepRow.name == "register")
            .values(status="failed", output=None)
        )
        conn.execute(update(JobRow).where(JobRow.id == job_id).values(status="failed"))
    rt.jobs.retry(job_id)

    # When it runs again
    again = wait_for_job(rt, job_id, drive=True, interval=0.3)

    # Then it returns the same registration, and there is still just one
    assert again["status"] == "succeeded", again["error"]
    assert again["result"]["registration_id"] == done["result"]["registration_id"]
    assert again["result"]["registered_now"] is False
    assert again["result"]["events"] == done["result"]["events"]
    with rt.store.engine.connect() as conn:
        rows = conn.scalar(select(func.count()).select_from(dataset_registrations))
    assert rows == 1


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])
def test_registrations_go_to_a_separate_metadata_database_when_configured(
    home: Path, datasets: Datasets, engine_name: str
) -> None:
    # Given PRODINF_METADATA_URL naming an empty database on a server
    server = POSTGRES_URL if engine_name == "postgresql" else MYSQL_URL
    require(engine_name, server)
    metadata = datasets.uri(engine_name, prefix="prodinf_meta_b")
    DatabaseURI.parse(metadata).create()
    settings = Settings(home=home, metadata_url=metadata, sqlite_roots=[home.parent])
    fresh_store(settings.store_url).dispose()
    rt = Runtime(settings, create_celery(settings))
    try:
        uri, _ = core_named(datasets, "sqlite", genes=50)

        # When a dataset is registered twice
        first = register(rt, {"database_uri": uri})
        second = register(rt, {"database_uri": uri})
    finally:
        rt.close()

    # Then the tables were created there on first use and hold both registrations
    assert first["status"] == second["status"] == "succeeded", (first["error"], second["error"])
    assert types(first["result"]["events"]) == ["dataset.created"]
    assert second["result"]["events"] == []
    assert DatabaseURI.parse(metadata).table_names() == [
        "prodinf_dataset_registrations",
        "prodinf_datasets",
    ]
    store = MetadataStore(settings)
    try:
        assert len(store.history(first["result"]["dataset"], "core")) == 2
    finally:
        store.dispose()


def test_a_name_no_naming_rule_matches_is_refused_naming_the_param(
    rt: Runtime, datasets: Datasets
) -> None:
    # Given a database whose name matches no naming rule
    uri = datasets.uri("sqlite", prefix="not_a_core_name")
    DatabaseURI.parse(uri).create()

    # When it is registered, then the submission is refused saying so; no job is made
    with pytest.raises(ValidationError) as refused:
        rt.jobs.submit("register_metadata", {"database_uri": uri})
    assert refused.value.field == "params.database_uri"
    assert "matches no naming rule" in refused.value.message
    assert rt.store.list_jobs(kind="register_metadata")[1] == 0


def test_no_password_is_kept_or_shown(
    rt: Runtime, datasets: Datasets, mariadb_user: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a database reached with a user and password
    uri, _ = core_named(datasets, "mysql", genes=50)
    url = DatabaseURI.parse(uri).url.set(username=mariadb_user, password=PASSWORD)

    # When it is registered with the password in the URI (and in the comment)
    caplog.set_level(logging.DEBUG)
    done = register(
        rt,
        {
            "database_uri": url.render_as_string(hide_password=False),
            "comment": f"copied from mysql://{mariadb_user}:{PASSWORD}@db.example.org/x",
        },
    )

    # Then neither the job, the stored registration nor the log holds the password
    assert done["status"] == "succeeded", done["error"]
    assert PASSWORD not in json.dumps(done)
    assert f"{mariadb_user}:***@" in done["result"]["database"]
    with rt.store.engine.connect() as conn:
        stored = conn.execute(select(dataset_registrations)).mappings().all()
    assert PASSWORD not in json.dumps([dict(row) for row in stored], default=str)
    assert PASSWORD not in caplog.text


def test_an_unreachable_server_fails_after_retries_with_a_clear_error(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a URI with a password, on a port nothing listens on
    uri = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/hcx_core_115_38"
    caplog.set_level(logging.DEBUG)

    # When it is registered
    done = register(rt, {"database_uri": uri})

    # Then it fails after retries, saying which server, and no password is shown or logged
    assert done["status"] == "failed"
    assert done["steps"][0]["attempts"] == 3
    assert "server unavailable" in done["error"]["message"]
    assert "postgres:***@127.0.0.1:1" in done["error"]["message"]
    assert PASSWORD not in json.dumps(done)
    assert PASSWORD not in caplog.text


def test_bad_credentials_fail_at_once(rt: Runtime, datasets: Datasets, mariadb_user: str) -> None:
    # Given a MariaDB database reached with a wrong password
    uri, _ = core_named(datasets, "mysql", genes=50)
    url = DatabaseURI.parse(uri).url.set(username=mariadb_user, password="Wrong-Pass-9876")

    # When it is registered
    done = register(rt, {"database_uri": url.render_as_string(hide_password=False)})

    # Then it fails at the first attempt, saying so without the password
    assert done["status"] == "failed"
    assert done["steps"][0]["attempts"] == 1
    assert "access denied or no such database" in done["error"]["message"]
    assert "Wrong-Pass-9876" not in json.dumps(done)
