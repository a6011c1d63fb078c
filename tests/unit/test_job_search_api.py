"""Finding jobs through ``GET /api/v1/jobs``: by a start of the id, text in the params,
submitter and creation time, sorted by creation, update or duration.

As in test_api.py: the portal on embedded settings (a real SQLite store and filesystem
broker); jobs submitted through the API stay queued unless a test drives them with the
app's own runner against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.loopback import Site
from tests.unit.test_api import JOBS, assert_clean_error, drive, submit

HUMAN = "homo_sapiens_core_115_38"
MOUSE = "mus_musculus_core_115_39"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test, never from the developer's PRODINF_* variables."""
    for name in list(os.environ):
        if name.startswith("PRODINF_"):
            monkeypatch.delenv(name)


def healthcheck(client: FlaskClient, database: str, **extra: Any) -> str:
    """Submit a healthcheck of ``database`` (it stays queued: no worker runs here)."""
    uri = f"mysql://ana:s3cret@db.example.org:3306/{database}"
    return submit(client, "healthcheck", {"database_uri": uri}, **extra)


def listed(client: FlaskClient, query: str) -> list[str]:
    """The ids ``GET /api/v1/jobs?<query>`` lists, checking its total agrees."""
    page = client.get(f"{JOBS}?{query}").json
    assert page is not None
    assert page["total"] == len(page["items"]), page
    return [job["id"] for job in page["items"]]


def test_jobs_are_found_by_text_in_params_id_start_and_submitter(client: FlaskClient) -> None:
    # Given healthchecks of two databases, by two people
    human = healthcheck(client, HUMAN, submitted_by="ana")
    mouse = healthcheck(client, MOUSE, submitted_by="bob")
    human_again = healthcheck(client, HUMAN, submitted_by="bob")

    # When the list is searched by a database's name (or part of it, in any case)
    # Then only the jobs about it are listed, newest first
    assert listed(client, f"q={HUMAN}") == [human_again, human]
    assert listed(client, "q=MUS_MUSCULUS") == [mouse]
    assert listed(client, "q=rattus") == []
    # a password in the params is not searchable (it is masked)
    assert listed(client, "q=s3cret") == []
    # by the 8 characters of an id a page shows
    assert listed(client, f"id={mouse[:8]}") == [mouse]
    # by submitter, and by both
    assert listed(client, "submitted_by=bob") == [human_again, mouse]
    assert listed(client, f"submitted_by=bob&q={HUMAN}") == [human_again]


def test_jobs_are_found_by_creation_time(client: FlaskClient) -> None:
    # Given three jobs submitted one after another
    jobs = [healthcheck(client, HUMAN) for _ in range(3)]
    created = [client.get(f"{JOBS}/{job}").json["created_at"] for job in jobs]  # type: ignore[index]

    # When the list asks for those created from the second on, or before it
    after = listed(client, f"created_after={created[1].replace('+00:00', 'Z')}")
    before = listed(client, f"created_before={created[1].replace('+', '%2B')}")

    # Then "after" includes the moment given, "before" excludes it
    assert after == [jobs[2], jobs[1]]
    assert before == [jobs[0]]
    # and a date alone is that day's midnight (UTC)
    assert listed(client, "created_before=2000-01-01") == []
    assert listed(client, "created_after=2000-01-01") == jobs[::-1]


def test_sorting_by_duration_lists_each_jobs_duration(
    client: FlaskClient, app: Flask, site: Site
) -> None:
    # Given two jobs run to the end and one still queued
    ran = [submit(client, "http_get", {"url": site.url(f"/ok?{i}")}) for i in range(2)]
    for job in ran:
        drive(app, job)
    queued = submit(client, "http_get", {"url": site.url("/ok?queued")})

    # When the list is sorted by duration, longest first, then shortest first
    longest = client.get(f"{JOBS}?sort=duration").json["items"]  # type: ignore[index]
    shortest = client.get(f"{JOBS}?sort=duration&order=asc").json["items"]  # type: ignore[index]

    # Then each job says how long it ran (null for the one never started, listed last)
    took = {job["id"]: job["duration_seconds"] for job in longest}
    assert took[queued] is None
    assert all(took[job] is not None and took[job] >= 0 for job in ran)
    assert [j["id"] for j in longest][-1] == queued
    assert [j["id"] for j in shortest][-1] == queued
    assert [took[j["id"]] for j in longest[:2]] == sorted((took[j] for j in ran), reverse=True)
    assert [took[j["id"]] for j in shortest[:2]] == sorted(took[j] for j in ran)
    # and sorted by creation, oldest first
    assert listed(client, "sort=created&order=asc") == [*ran, queued]


def test_the_next_page_keeps_the_search(client: FlaskClient) -> None:
    # Given three jobs about one database and two about another
    human = [healthcheck(client, HUMAN) for _ in range(3)]
    for _ in range(2):
        healthcheck(client, MOUSE)

    # When the search is read one job at a time by following `next`
    seen: list[str] = []
    url: str | None = f"{JOBS}?q=homo_sapiens&sort=created&order=asc&limit=1"
    while url:
        page = client.get(url).json
        assert page is not None and page["total"] == 3
        seen += [job["id"] for job in page["items"]]
        url = page["next"]
        if url:
            args = parse_qs(urlsplit(url).query)
            assert (args["q"], args["sort"], args["order"]) == (
                ["homo_sapiens"],
                ["created"],
                ["asc"],
            )

    # Then it walks the matching jobs only, in the order asked
    assert seen == human


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("created_after=yesterday", "created_after"),
        ("created_after=2024-05-01T25:00", "created_after"),
        ("created_before=2024-13-01", "created_before"),
        ("sort=size", "sort"),
        ("sort=duration&order=up", "order"),
    ],
)
def test_a_bad_search_gets_a_400_naming_the_arg(
    client: FlaskClient, query: str, field: str
) -> None:
    """Given a bad search arg, when the list is asked for, then a 400 names it."""
    assert_clean_error(client.get(f"{JOBS}?{query}"), 400, field)


def test_the_search_args_are_in_the_openapi_document(client: FlaskClient) -> None:
    """When the OpenAPI document is read, then the job list documents every search arg."""
    spec = client.get("/api/v1/swagger.json").json
    assert spec is not None
    documented = {p["name"] for p in spec["paths"]["/jobs"]["get"]["parameters"]}
    assert documented >= {"id", "q", "submitted_by", "created_after", "created_before"}
    assert documented >= {"sort", "order", "kind", "status", "limit", "offset"}
