"""The job store contract for reading jobs a page at a time: cursors (``next`` and
``previous``, passed back as ``after`` and ``before``) and counts that stop at a limit;
one suite run on every backend (SQLite, PostgreSQL, MariaDB).

Sorted by creation or update, a cursor is the key of the last (or first) job shown, so a
page deep in a million jobs is read from the index like the first one; sorted by
duration, or searched by text, a cursor holds an offset. Jobs are submitted for real
(tests/contract/lab.py's ``plain`` kind); where two must share a creation time, the test
writes it into their rows, as a busy clock would have. Read each test as Given / When /
Then.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import update

import prodinf.store.search as search_module
from prodinf.exceptions import ValidationError
from prodinf.store.models import JOBS
from tests.world import World


def walk(world: World, **search: Any) -> tuple[list[list[str]], list[list[str]]]:
    """The pages met following ``next`` from the first page to the last (2 jobs each),
    then following ``previous`` from the last back to the first."""
    forward: list[list[str]] = []
    page = world.store.find_jobs(limit=2, **search)
    while True:
        forward.append([j["id"] for j in page["items"]])
        assert page["total_exact"] is True
        if page["next"] is None:
            break
        page = world.store.find_jobs(limit=2, after=page["next"], **search)
    backward = [[j["id"] for j in page["items"]]]
    while page["previous"] is not None:
        page = world.store.find_jobs(limit=2, before=page["previous"], **search)
        backward.insert(0, [j["id"] for j in page["items"]])
    return forward, backward


@pytest.mark.parametrize(
    ("sort", "order"),
    [("created", "desc"), ("created", "asc"), ("updated", "desc"), ("duration", "desc")],
)
def test_next_and_previous_walk_every_job_once_in_order(
    world: World, sort: str, order: str
) -> None:
    # Given seven jobs, three of them created in the same microsecond
    jobs = [world.submit("plain", {"payload": i}) for i in range(7)]
    same = datetime(2030, 1, 1, tzinfo=UTC)
    with world.store.transaction() as conn:
        conn.execute(
            update(JOBS).where(JOBS.c.id.in_(jobs[2:5])).values(created_at=same, updated_at=same)
        )

    # When the list is walked two at a time by its cursors, forward then back
    forward, backward = walk(world, sort=sort, order=order)

    # Then each job is met once, in the order of the whole list, on the same pages
    # both ways, and the last page says there is no next
    whole = [j["id"] for j in world.store.find_jobs(limit=50, sort=sort, order=order)["items"]]
    assert sorted(whole) == sorted(jobs)
    assert [job for page in forward for job in page] == whole
    assert forward == backward
    assert [len(page) for page in forward] == [2, 2, 2, 1]


def test_a_cursor_keeps_its_place_when_newer_jobs_arrive(world: World) -> None:
    # Given five jobs read two at a time, newest first
    jobs = [world.submit("plain", {"payload": i}) for i in range(5)]
    first = world.store.find_jobs(limit=2)

    # When three more jobs are submitted before the next page is read
    for i in range(3):
        world.submit("plain", {"payload": f"late {i}"})
    second = world.store.find_jobs(limit=2, after=first["next"])

    # Then the next page goes on after the last job shown, not from a shifted offset
    assert [j["id"] for j in first["items"]] == [jobs[4], jobs[3]]
    assert [j["id"] for j in second["items"]] == [jobs[2], jobs[1]]


def test_a_text_search_pages_by_offset(world: World) -> None:
    # Given three jobs about one database among others
    human = [world.submit("plain", {"payload": "homo_sapiens_core"}) for _ in range(3)]
    world.submit("plain", {"payload": "mus_musculus_core"})

    # When the search is walked a job at a time
    pages = [world.store.find_jobs(text="homo_sapiens", limit=1)]
    while pages[-1]["next"]:
        pages.append(world.store.find_jobs(text="homo_sapiens", limit=1, after=pages[-1]["next"]))

    # Then it meets each of them once, newest first, each page saying how many match
    assert [p["items"][0]["id"] for p in pages] == human[::-1]
    assert {p["total"] for p in pages} == {3}
    back = world.store.find_jobs(text="homo_sapiens", limit=1, before=pages[-1]["previous"])
    assert [j["id"] for j in back["items"]] == [human[1]]


def test_counting_stops_at_its_limit(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit is 10,000 jobs; it is lowered to 3 here so that five jobs pass it."""
    monkeypatch.setattr(search_module, "COUNT_LIMIT", 3)
    jobs = [world.submit("plain", {"payload": i}) for i in range(5)]
    world.jobs.cancel(jobs[0])

    # When the second page is read, and the counts per status up to 3
    first = world.store.find_jobs(limit=2)
    second = world.store.find_jobs(limit=2, after=first["next"])
    counts = world.store.counts(limit=3)

    # Then a page past the first says "at least 3", while a page holding every match
    # knows its total; each status is counted up to one past the limit
    assert (second["total"], second["total_exact"]) == (3, False)
    assert world.store.find_jobs(status="cancelled")["total_exact"] is True
    assert counts == {"queued": 4, "cancelled": 1}
    assert world.store.counts() == {"queued": 4, "cancelled": 1}


@pytest.mark.parametrize(
    ("cursor", "search"),
    [
        ("nonsense!", {}),
        ("W10", {}),  # base64 of "[]"
        ("created-desc", {"sort": "updated"}),  # replaced below by a real cursor of another sort
    ],
)
def test_a_bad_cursor_is_refused_naming_it(
    world: World, cursor: str, search: dict[str, Any]
) -> None:
    # Given three jobs, and a cursor of the default sort (newest created first)
    for i in range(3):
        world.submit("plain", {"payload": i})
    if cursor == "created-desc":
        cursor = world.store.find_jobs(limit=1)["next"]

    # When a page is asked for after it, then before it, then the field is named
    for field in ("after", "before"):
        with pytest.raises(ValidationError) as caught:
            world.store.find_jobs(**search, **{field: cursor})
        assert caught.value.field == field
