"""Reading dataset registrations back: ``GET /api/v1/datasets``, ``GET
/api/v1/datasets/<type>/<name>``, and the pages ``/datasets`` and
``/datasets/<type>/<name>``.

Registrations are made for real: ``register_metadata`` jobs, driven in this process by
the portal's own runner, measure small SQLite databases shaped like Ensembl cores
(``tests.sample_data.build_core_like``) and register them in the embedded job store,
recording the events each registration implies.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from tests.embedded import run, runtime_of
from tests.pages import input_value, page, text_of
from tests.sample_data import build_core_like
from tests.unit.test_api import assert_clean_error

API = "/api/v1/datasets"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test, never from the developer's PRODINF_* variables."""
    for name in list(os.environ):
        if name.startswith("PRODINF_"):
            monkeypatch.delenv(name)


def register(app: Flask, uri: str, **params: Any) -> str:
    """Register the database at ``uri`` with a register_metadata job run to its end."""
    job_id = run(app, "register_metadata", {"database_uri": uri, **params})
    job = runtime_of(app).store.describe(job_id)
    assert job["status"] == "succeeded", job["error"]
    return job_id


@pytest.fixture
def registered(app: Flask, tmp_path: Path) -> dict[str, str]:
    """Given the human core registered, then registered again after a table changed, then
    the mouse core and the human variation database registered once each: the jobs, by
    name."""
    human = f"sqlite:///{tmp_path}/homo_sapiens_core_115_38.sqlite"
    build_core_like(human, genes=5, release=115)
    jobs = {"human": register(app, human, source="the core team", comment="first build")}
    engine = create_engine(human)
    with engine.begin() as conn:
        conn.execute(
            text(
                "DELETE FROM exon_transcript WHERE rowid = (SELECT MIN(rowid) FROM exon_transcript)"
            )
        )
    engine.dispose()
    jobs["human again"] = register(app, human, comment="one exon less")
    for name, database in (
        ("mouse", "mus_musculus_core_115_39"),
        ("variation", "homo_sapiens_variation_115_38"),
    ):
        uri = f"sqlite:///{tmp_path}/{database}.sqlite"
        build_core_like(uri, genes=3, release=115)
        jobs[name] = register(app, uri)
    return jobs


def names(client: FlaskClient, query: str = "") -> list[tuple[str, str]]:
    """(type, name) of each dataset ``GET /api/v1/datasets?<query>`` lists, checking its
    total agrees."""
    answer = client.get(f"{API}?{query}").json
    assert answer is not None
    assert answer["total"] == len(answer["items"]), answer
    return [(d["type"], d["name"]) for d in answer["items"]]


# -- the API ---------------------------------------------------------------------------------


def test_the_datasets_are_listed_most_recently_registered_first(
    client: FlaskClient, registered: dict[str, str]
) -> None:
    # When the datasets are listed
    answer = client.get(API).json
    assert answer is not None

    # Then each is there once, the most recently registered first, with its newest
    # registration's release, database, job and time, and how many registrations it has
    assert names(client) == [
        ("variation", "homo_sapiens"),
        ("core", "mus_musculus"),
        ("core", "homo_sapiens"),
    ]
    human = answer["items"][2]
    assert human["registration_count"] == 2
    assert human["latest_release"] == 115
    assert human["latest_database"] == "homo_sapiens_core_115_38"
    assert human["latest_job_id"] == registered["human again"]
    assert human["latest_job"].endswith(f"/api/v1/jobs/{registered['human again']}")
    assert human["url"].endswith("/api/v1/datasets/core/homo_sapiens")
    assert human["page"].endswith("/datasets/core/homo_sapiens")
    assert human["last_registered_at"].endswith("+00:00")
    assert answer["next"] is None


def test_the_datasets_are_searched_by_name_database_and_type(
    client: FlaskClient, registered: dict[str, str]
) -> None:
    # When searched by part of a name, in any case, then the datasets holding it
    assert names(client, "q=MUS") == [("core", "mus_musculus")]
    assert names(client, "q=sapiens") == [("variation", "homo_sapiens"), ("core", "homo_sapiens")]
    # by a database's name, then its dataset; by type, then that type's
    assert names(client, "q=homo_sapiens_core_115_38") == [("core", "homo_sapiens")]
    assert names(client, "type=variation") == [("variation", "homo_sapiens")]
    assert names(client, "q=sapiens&type=core") == [("core", "homo_sapiens")]
    # LIKE wildcards are plain characters; an unknown type finds nothing
    assert names(client, "q=%25") == []
    assert names(client, "q=homo_") == [("variation", "homo_sapiens"), ("core", "homo_sapiens")]
    assert names(client, "type=rnaseq") == []

    # And a page at a time, `next` keeping the search
    first = client.get(f"{API}?q=sapiens&limit=1").json
    assert first is not None and first["total"] == 2
    following = client.get(first["next"]).json
    assert following is not None
    assert [d["type"] for d in [*first["items"], *following["items"]]] == ["variation", "core"]
    assert following["next"] is None


def test_a_dataset_has_its_registrations_in_order_with_their_jobs_and_events(
    client: FlaskClient, registered: dict[str, str]
) -> None:
    # When the human core is read
    dataset = client.get(f"{API}/core/homo_sapiens").json
    assert dataset is not None

    # Then its registrations are there oldest first, each with its job and what it recorded
    assert (dataset["name"], dataset["type"], dataset["registration_count"]) == (
        "homo_sapiens",
        "core",
        2,
    )
    first, second = dataset["registrations"]
    assert (first["job_id"], second["job_id"]) == (registered["human"], registered["human again"])
    assert first["job"].endswith(f"/api/v1/jobs/{registered['human']}")
    assert (first["release"], first["database_name"], first["engine"]) == (
        115,
        "homo_sapiens_core_115_38",
        "sqlite",
    )
    assert (first["source"], first["comment"]) == ("the core team", "first build")
    assert (second["source"], second["comment"]) == (None, "one exon less")
    assert second["total_rows"] == first["total_rows"] - 1
    assert first["registered_at"] < second["registered_at"]
    assert "exon_transcript" in first["tables"]
    # and the events each recorded, linked to the events themselves
    assert [e["type"] for e in first["events"]] == ["dataset.created"]
    assert [e["type"] for e in second["events"]] == ["dataset.updated"]
    updated = second["events"][0]
    assert updated["tables"]["changed"] == ["exon_transcript"]
    event = client.get(updated["url"]).json
    assert event is not None
    assert (event["id"], event["type"]) == (updated["event_id"], "dataset.updated")
    assert event["payload"]["registration_id"] == second["id"]
    assert updated["status"] == client.get(event["job"]).json["status"]  # type: ignore[index]


def test_an_unknown_dataset_is_a_404_naming_it(
    client: FlaskClient, registered: dict[str, str]
) -> None:
    """Given registered datasets, when one never registered (or of another type) is read,
    then the answer is a 404 naming it."""
    assert_clean_error(client.get(f"{API}/core/rattus_norvegicus"), 404, "name")
    assert_clean_error(client.get(f"{API}/rnaseq/homo_sapiens"), 404, "name")


@pytest.mark.parametrize(("query", "field"), [("limit=0", "limit"), ("offset=x", "offset")])
def test_a_bad_page_is_a_400_naming_it(client: FlaskClient, query: str, field: str) -> None:
    assert_clean_error(client.get(f"{API}?{query}"), 400, field)


def test_the_datasets_endpoints_are_in_the_openapi_document(client: FlaskClient) -> None:
    paths = client.get("/api/v1/swagger.json").json["paths"]  # type: ignore[index]
    assert "/datasets" in paths
    assert "/datasets/{dataset_type}/{name}" in paths
    documented = {p["name"] for p in paths["/datasets"]["get"]["parameters"]}
    assert documented >= {"q", "type", "limit", "offset"}


# -- the pages -------------------------------------------------------------------------------


def test_the_datasets_page_lists_and_searches_them(
    client: FlaskClient, registered: dict[str, str]
) -> None:
    # When the user opens the datasets page from the navigation
    html = page(client, "/datasets")
    assert re.search(r'<a href="/datasets" aria-current="page">Datasets</a>', html)

    # Then each dataset is a row linking to its history and its newest registration's job
    row = text_of(html, "dataset-core-homo_sapiens")
    assert "homo_sapiens_core_115_38" in row and "115" in row and "2" in row
    assert 'href="/datasets/core/homo_sapiens"' in html
    assert f'href="/jobs/{registered["human again"]}"' in html

    # When they search for the mouse, then only it is listed, the box keeping the text
    found = page(client, "/datasets?q=mus_musculus")
    assert "dataset-core-mus_musculus" in found
    assert "dataset-core-homo_sapiens" not in found
    assert input_value(found, "q") == "mus_musculus"
    # and by type
    assert re.findall(r'<tr id="dataset-([a-z]+)-', page(client, "/datasets?type=variation")) == [
        "variation"
    ]
    assert "No datasets match these filters" in page(client, "/datasets?q=rattus")


def test_a_datasets_page_shows_its_history_with_links_to_jobs_and_events(
    client: FlaskClient, registered: dict[str, str]
) -> None:
    # When the user opens the human core's page
    html = page(client, "/datasets/core/homo_sapiens")
    dataset = client.get(f"{API}/core/homo_sapiens").json
    assert dataset is not None
    first, second = dataset["registrations"]

    # Then its registrations are listed newest first, each linking to its job and events
    assert "2 registrations" in text_of(html, "dataset-summary")
    rows = re.findall(r'<tr id="registration-(\d+)"', html)
    assert rows == [str(second["id"]), str(first["id"])]
    newest = text_of(html, f"registration-{second['id']}")
    assert "dataset.updated" in newest and "one exon less" in newest
    assert "homo_sapiens_core_115_38" in newest
    oldest = text_of(html, f"registration-{first['id']}")
    assert "dataset.created" in oldest and "the core team" in oldest and "first build" in oldest
    for reg in (first, second):
        assert f'href="/jobs/{reg["job_id"]}"' in html
        assert f'href="/events/{reg["events"][0]["event_id"]}"' in html


def test_an_unknown_datasets_page_is_a_404_page(
    client: FlaskClient, registered: dict[str, str]
) -> None:
    html = page(client, "/datasets/core/rattus_norvegicus", 404)
    assert "rattus_norvegicus" in html
    assert "<code>name</code>" in html


def test_with_nothing_registered_the_page_says_how_datasets_come(client: FlaskClient) -> None:
    html = page(client, "/datasets")
    assert "No datasets are registered yet" in text_of(html, "datasets-empty")
    assert client.get(API).json == {"items": [], "total": 0, "limit": 50, "offset": 0, "next": None}
