"""The job store contract for finding jobs: ``list_jobs`` by a start of the id, text in
the params, submitter and creation dates, sorted by creation, update or duration; one
suite run on every backend (SQLite, PostgreSQL, MariaDB).

Jobs are submitted for real (tests/contract/lab.py's ``plain`` kind, whose params are
``{"payload": ...}``); where a test needs a job to have been created, started or ended
at a given time, it writes those times into the job's row, as the clock would have.
Read each test as Given / When / Then.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import update

from prodinf.exceptions import ValidationError
from prodinf.status import JobStatus
from prodinf.store.models import JOBS
from prodinf.store.types import utcnow
from tests.world import World


def ids(world: World, **search: Any) -> list[str]:
    """The ids ``list_jobs(**search)`` lists, checking its total agrees."""
    items, total = world.store.list_jobs(**search)
    assert total == len(items), (total, items)
    return [job["id"] for job in items]


def set_times(world: World, job_id: str, **values: Any) -> None:
    """Write timestamps (and a status) into the job's row, as the clock would have."""
    with world.store.transaction() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(**values))


# -- filters ---------------------------------------------------------------------------------


def test_a_start_of_the_id_finds_the_job_whatever_its_case(world: World) -> None:
    # Given three jobs
    jobs = [world.submit("plain", {"payload": i}) for i in range(3)]
    wanted = jobs[1]

    # When searched by the 8 characters a page shows, in either case, then that job only
    assert ids(world, id_prefix=wanted[:8]) == [wanted]
    assert ids(world, id_prefix=wanted[:8].upper()) == [wanted]
    assert ids(world, id_prefix=f" {wanted} ") == [wanted]
    # an empty prefix filters nothing; LIKE wildcards are matched as themselves
    assert set(ids(world, id_prefix="")) == set(jobs)
    assert ids(world, id_prefix="%") == []
    assert ids(world, id_prefix="_") == []
    assert ids(world, id_prefix="zzzz") == []


DATABASES = {
    "human": "homo_sapiens_core_115_38",
    "mouse": "mus_musculus_core_115_39",
    "variation": "homo_sapiens_variation_115_38",
    # what homo_sapiens would match if _ were a wildcard
    "lookalike": "homoXsapiens_core_115_38",
}


def test_text_in_the_params_finds_a_database_by_name_ignoring_case(world: World) -> None:
    # Given jobs whose params name different databases, at different depths
    jobs = {
        "human": world.submit("plain", {"payload": {"database": DATABASES["human"]}}),
        "mouse": world.submit("plain", {"payload": [{"db": DATABASES["mouse"]}]}),
        "variation": world.submit("plain", {"payload": DATABASES["variation"]}),
        "lookalike": world.submit("plain", {"payload": {"database": DATABASES["lookalike"]}}),
        "none": world.submit("plain", {"payload": None}),
    }

    # When searched by a database's whole name, then only its job is found
    assert ids(world, text="homo_sapiens_core_115_38") == [jobs["human"]]
    assert ids(world, text="mus_musculus_core_115_39") == [jobs["mouse"]]
    # by part of a name, in any case, then every job holding it, newest first
    assert ids(world, text="HOMO_SAPIENS") == [jobs["variation"], jobs["human"]]
    assert ids(world, text="  _core_115_3") == [jobs["lookalike"], jobs["mouse"], jobs["human"]]
    # and a param's name is text in the params too
    assert ids(world, text='"db"') == [jobs["mouse"]]
    assert ids(world, text="rattus") == []
    # combined with other filters
    world.jobs.cancel(jobs["variation"])
    assert ids(world, text="homo_sapiens", status=JobStatus.CANCELLED) == [jobs["variation"]]


def test_like_wildcards_in_the_text_match_only_themselves(world: World) -> None:
    # Given jobs whose params differ where a LIKE wildcard would hide the difference
    percent = world.submit("plain", {"payload": "copied 5% of 100"})
    digits = world.submit("plain", {"payload": "copied 50 of 100"})
    human = world.submit("plain", {"payload": DATABASES["human"]})
    lookalike = world.submit("plain", {"payload": DATABASES["lookalike"]})

    # When the text holds % or _, then they are matched as characters, not wildcards
    assert ids(world, text="5%") == [percent]
    assert ids(world, text="copied%100") == []
    assert ids(world, text="homo_sapiens") == [human]
    assert ids(world, text="homo_") == [human]
    assert ids(world, text="X") == [lookalike]
    assert set(ids(world, text="copied 5")) == {percent, digits}
    # and the escape character itself is plain text
    assert ids(world, text="/") == []


def test_text_with_quotes_accents_and_backslashes_is_found(world: World) -> None:
    # Given a job whose params hold what JSON escapes
    odd = world.submit("plain", {"payload": {"note": 'naïve "quoted" C:\\data'}})
    world.submit("plain", {"payload": {"note": "plain"}})

    # When it is searched for as a user would type it, then it is found
    assert ids(world, text='naïve "quoted"') == [odd]
    assert ids(world, text="NAÏVE") == [odd]
    assert ids(world, text="C:\\data") == [odd]
    assert ids(world, text='"quoted" c:') == [odd]


def test_a_password_in_the_params_cannot_be_searched_for(world: World) -> None:
    # Given a job whose params hold a database URL with a password
    job = world.submit("plain", {"payload": "mysql://ana:hunter2@db.example.org/homo_sapiens"})

    # When searched for by the password, then it is not found (as a page shows it masked)
    assert ids(world, text="hunter2") == []
    assert ids(world, text="ana:h") == []
    # and by the rest of it, it is
    assert ids(world, text="mysql://ana") == [job]
    assert ids(world, text="@db.example.org/homo_sapiens") == [job]


def test_submitter_is_matched_as_a_whole_name_ignoring_case(world: World) -> None:
    # Given jobs submitted by ana, Ana-Maria, bob and nobody
    ana = world.submit("plain", {}, submitted_by="ana")
    world.submit("plain", {}, submitted_by="Ana-Maria")
    bob = world.submit("plain", {}, submitted_by="bob")
    world.submit("plain", {})

    # Then a submitter's name finds their jobs only, in any case
    assert ids(world, submitted_by="ana") == [ana]
    assert ids(world, submitted_by="ANA") == [ana]
    assert ids(world, submitted_by="bob") == [bob]
    assert ids(world, submitted_by="an") == []


def test_created_after_and_before_select_a_range_of_creation_times(world: World) -> None:
    # Given jobs created on 1, 2 and 3 May at 10:00 UTC
    days = {}
    for day in (1, 2, 3):
        job_id = world.submit("plain", {})
        set_times(world, job_id, created_at=datetime(2024, 5, day, 10, tzinfo=UTC))
        days[day] = job_id

    # Then after is inclusive, before exclusive, and both give the range between
    assert ids(world, created_after=datetime(2024, 5, 2, 10, tzinfo=UTC)) == [days[3], days[2]]
    assert ids(world, created_before=datetime(2024, 5, 2, 10, tzinfo=UTC)) == [days[1]]
    assert ids(
        world,
        created_after=datetime(2024, 5, 2, tzinfo=UTC),
        created_before=datetime(2024, 5, 3, tzinfo=UTC),
    ) == [days[2]]
    # a moment in another zone is that moment: 11:30 at UTC+2 is 09:30 UTC
    plus_two = timezone(timedelta(hours=2))
    assert ids(world, created_after=datetime(2024, 5, 2, 11, 30, tzinfo=plus_two)) == [
        days[3],
        days[2],
    ]
    assert ids(world, created_after=datetime(2024, 5, 4, tzinfo=UTC)) == []


# -- sorting ---------------------------------------------------------------------------------


def test_sorting_by_duration_puts_jobs_that_never_started_last(world: World) -> None:
    # Given jobs that ran for 0.25 s, 5 s and an hour, one still running for two hours
    # now, and one never started
    now = utcnow()
    ran = {}
    for seconds in (5, 0.25, 3600):
        job_id = world.submit("plain", {})
        world.drive(job_id)
        end = now - timedelta(minutes=1)
        set_times(world, job_id, started_at=end - timedelta(seconds=seconds), finished_at=end)
        ran[seconds] = job_id
    running = world.submit("plain", {})
    set_times(world, running, status=JobStatus.RUNNING, started_at=now - timedelta(hours=2))
    queued = world.submit("plain", {})

    # When sorted by duration, longest first and shortest first
    longest = world.store.list_jobs(sort="duration")[0]
    shortest = world.store.list_jobs(sort="duration", order="asc")[0]

    # Then a running job counts until now, and a job never started comes last either way
    assert [j["id"] for j in longest] == [running, ran[3600], ran[5], ran[0.25], queued]
    assert [j["id"] for j in shortest] == [ran[0.25], ran[5], ran[3600], running, queued]
    took = {j["id"]: j["duration_seconds"] for j in longest}
    assert (took[ran[0.25]], took[ran[5]], took[ran[3600]]) == (0.25, 5.0, 3600.0)
    assert 7200 <= took[running] < 7200 + 600
    assert took[queued] is None
    # and a page of them keeps the order and the total
    page, total = world.store.list_jobs(sort="duration", limit=2, offset=1)
    assert ([j["id"] for j in page], total) == ([ran[3600], ran[5]], 5)


def test_sorting_by_creation_and_update_either_way(world: World) -> None:
    # Given three jobs, the oldest updated last
    jobs = [world.submit("plain", {}) for _ in range(3)]
    world.jobs.cancel(jobs[0])

    # Then created sorts both ways, newest first by default, and updated too
    assert ids(world) == jobs[::-1]
    assert ids(world, sort="created", order="asc") == jobs
    assert ids(world, sort="updated")[0] == jobs[0]
    assert ids(world, sort="updated", order="asc")[-1] == jobs[0]


def test_pages_of_a_search_keep_its_total(world: World) -> None:
    # Given five jobs about one database and two about another
    human = [world.submit("plain", {"payload": DATABASES["human"]}) for _ in range(5)]
    for _ in range(2):
        world.submit("plain", {"payload": DATABASES["mouse"]})

    # When their search is read two at a time
    pages = [world.store.list_jobs(text="homo_sapiens", limit=2, offset=o) for o in (0, 2, 4, 6)]

    # Then the pages hold each job once, newest first, and each says how many match
    assert [[j["id"] for j in page] for page, _ in pages] == [
        human[4:2:-1],
        human[2:0:-1],
        human[:1],
        [],
    ]
    assert {total for _, total in pages} == {5}
    # and without text too, past the last page
    assert world.store.list_jobs(limit=2, offset=10) == ([], 7)


@pytest.mark.parametrize(
    ("search", "field"),
    [
        ({"sort": "size"}, "sort"),
        ({"order": "up"}, "order"),
        ({"created_after": datetime(2024, 5, 1)}, "created_after"),
        ({"created_before": datetime(2024, 5, 1)}, "created_before"),
    ],
)
def test_a_bad_sort_or_a_date_without_a_zone_is_named(
    world: World, search: dict[str, Any], field: str
) -> None:
    # When a search is asked for with it, then it is refused, naming the field
    with pytest.raises(ValidationError) as caught:
        world.store.list_jobs(**search)
    assert caught.value.field == field
