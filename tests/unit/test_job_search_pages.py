"""Finding jobs on the jobs list page (``/``, also ``/jobs``): the search form, the
Duration column, sortable column headers and paging that keeps the search; through
Flask's test client (a real headless Chromium searches in
``tests/integration/test_browser_search.py``).

Jobs are submitted through the portal's runtime and stay queued, or are driven in this
process against a real HTTP server on 127.0.0.1. Where a test needs a job created,
started or ended at a given time, it writes those times into the job's row, as the
clock would have.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from prodinf.status import JobStatus
from prodinf.store.models import JOBS
from prodinf.store.search import human_duration
from tests.embedded import run, runtime_of, submit
from tests.loopback import Site
from tests.pages import input_value, page, text_of

HUMAN = "homo_sapiens_core_115_38"
MOUSE = "mus_musculus_core_115_39"


def healthcheck(app: Flask, database: str, **extra: Any) -> str:
    """A queued healthcheck of ``database`` (no worker runs here)."""
    uri = f"mysql://ana@db.example.org:3306/{database}"
    return submit(app, "healthcheck", {"database_uri": uri}, **extra)


def set_times(app: Flask, job_id: str, **values: Any) -> None:
    """Write timestamps into the job's row, as the clock would have."""
    with runtime_of(app).store.transaction() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(**values))


def rows(html: str) -> list[str]:
    """The ids of the jobs the page lists, in its order."""
    return re.findall(r'<tr id="job-([0-9a-f-]{36})"', html)


def test_the_search_box_finds_jobs_by_a_database_name(app: Flask, client: FlaskClient) -> None:
    # Given healthchecks of two databases, by two people
    human = healthcheck(app, HUMAN, submitted_by="ana")
    mouse = healthcheck(app, MOUSE, submitted_by="bob")

    # When the user searches for one database's name
    html = page(client, f"/?q={HUMAN}")

    # Then only its job is listed, and the box still shows what they typed
    assert rows(html) == [human]
    assert input_value(html, "q") == HUMAN
    assert "Clear" in text_of(html, "search")
    # and the other inputs search too, at /jobs as at /
    assert rows(page(client, f"/jobs?id={mouse[:8]}")) == [mouse]
    assert rows(page(client, "/?submitted_by=BOB")) == [mouse]
    assert rows(page(client, "/?q=homo_sapiens&submitted_by=bob")) == []
    assert "No jobs match these filters" in page(client, "/?q=rattus")


def test_from_and_to_dates_take_whole_days(app: Flask, client: FlaskClient) -> None:
    # Given jobs created on 1, 2 and 3 May
    days = {}
    for day in (1, 2, 3):
        days[day] = healthcheck(app, HUMAN)
        set_times(app, days[day], created_at=datetime(2024, 5, day, 23, 59, tzinfo=UTC))

    # When the list is asked for 2 May to 2 May, or from 2 May
    one_day = page(client, "/?from=2024-05-02&to=2024-05-02")
    from_then = page(client, "/?from=2024-05-02")

    # Then "to" takes all of its day
    assert rows(one_day) == [days[2]]
    assert rows(from_then) == [days[3], days[2]]
    assert input_value(one_day, "from") == "2024-05-02"
    assert input_value(one_day, "to") == "2024-05-02"


def test_the_duration_column_says_how_long_each_job_ran(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    # Given a job that ran for 2 min 3 s, one still running for an hour, and one queued
    done = run(app, "http_get", {"url": f"{site.base}/ok"})
    end = datetime.now(UTC) - timedelta(minutes=5)
    set_times(app, done, started_at=end - timedelta(seconds=123), finished_at=end)
    running = healthcheck(app, MOUSE)
    started = datetime.now(UTC) - timedelta(hours=1, minutes=1)
    set_times(app, running, status=JobStatus.RUNNING, started_at=started)
    queued = healthcheck(app, HUMAN)

    # When the list is opened
    html = page(client, "/")

    # Then each row shows its duration in words (so far, for the running one; none for
    # the one not started)
    assert "Duration" in html
    assert re.search(r'<td class="duration" title="123\.0 s">2 min 3 s</td>', html)
    assert "1 h 1 min so far" in text_of(html, f"job-{running}")
    assert re.search(rf'id="job-{queued}".*?<td class="duration"></td>', html, re.S)


def test_column_headers_sort_and_paging_keeps_the_search(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    # Given three jobs about one database that ran 1, 3 and 2 minutes, and one other
    human = []
    for minutes in (1, 3, 2):
        job = run(app, "http_get", {"url": f"{site.base}/ok?{HUMAN}"})
        end = datetime.now(UTC) - timedelta(hours=1)
        set_times(app, job, started_at=end - timedelta(minutes=minutes), finished_at=end)
        human.append(job)
    run(app, "http_get", {"url": f"{site.base}/ok?{MOUSE}"})

    # When the user searches, then clicks the Duration header
    searched = page(client, f"/?q={HUMAN}")
    header = re.search(r'id="sort-duration" href="([^"]+)"', searched)
    assert header
    by_duration = page(client, header.group(1).replace("&amp;", "&"))

    # Then the matching jobs are sorted longest first, and the header says so
    assert rows(by_duration) == [human[1], human[2], human[0]]
    assert re.search(
        r'<th aria-sort="descending">\s*<a class="sort" id="sort-duration"', by_duration
    )
    # and clicking it again turns the order round
    again = re.search(r'id="sort-duration" href="([^"]+)"', by_duration)
    assert again and "order=asc" in again.group(1)
    assert rows(page(client, again.group(1).replace("&amp;", "&"))) == [
        human[0],
        human[2],
        human[1],
    ]

    # When the sorted search is read a page of one at a time, then each next link keeps
    # the search and the sort
    seen: list[str] = []
    url: str | None = f"/?q={HUMAN}&sort=duration&limit=1"
    while url:
        html = page(client, url)
        seen += rows(html)
        found = re.search(r'rel="next" href="([^"]+)"', html)
        url = found.group(1).replace("&amp;", "&") if found else None
        if url:
            assert f"q={HUMAN}" in url and "sort=duration" in url and "limit=1" in url
    assert seen == [human[1], human[2], human[0]]


@pytest.mark.parametrize(
    ("query", "field"),
    [("from=yesterday", "from"), ("to=2024-02-30", "to"), ("sort=size", "sort")],
)
def test_a_bad_search_is_a_400_page_naming_it(client: FlaskClient, query: str, field: str) -> None:
    """Given a bad search input, when the list is opened with it, then a 400 page names it."""
    html = page(client, f"/?{query}", 400)

    assert f"{field} must be" in html
    assert f"<code>{field}</code>" in html


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, ""),
        (0.4213, "0.42 s"),
        (42.9, "42 s"),
        (123, "2 min 3 s"),
        (3 * 3600 + 5 * 60 + 9, "3 h 5 min"),
        (2 * 86400 + 3 * 3600, "2 d 3 h"),
    ],
)
def test_durations_read_as_a_person_says_them(seconds: float | None, shown: str) -> None:
    assert human_duration(seconds) == shown
