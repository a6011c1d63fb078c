"""Finding jobs with ``prodinf show``: by a start of the id, text in the params,
submitter and creation dates, sorted by creation, update or duration.

As in test_cli.py: each command runs in-process through click's ``CliRunner`` against a
real SQLite store and filesystem broker under a temporary ``PRODINF_HOME``; jobs stay
queued (no worker runs). Where a test needs a job to have run for a given time, it
writes its start and end into the job's row, as the clock would have.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from prodinf.config import Settings
from prodinf.status import JobStatus
from prodinf.store import JobStore
from prodinf.store.models import JOBS
from tests.unit.test_cli import (
    assert_clean_failure,
    cli_env,
    prodinf,
    show_json,
    succeeded,
    table_rows,
)

__all__ = ["cli_env"]  # the autouse fixture: embedded defaults under the test's home

HUMAN = "homo_sapiens_core_115_38"
MOUSE = "mus_musculus_core_115_39"


def post_about(database: str) -> str:
    """Post an http_get job whose URL names ``database`` (no worker runs it); its id."""
    out = succeeded(prodinf("post", "http_get", "-p", f"url=http://127.0.0.1:1/{database}"))
    return out.split()[-1]


def listed(*args: str) -> list[str]:
    """The ids ``prodinf show --json ARGS`` lists, checking its total agrees."""
    shown = show_json(*args)
    assert shown["total"] == len(shown["items"]), shown
    return [job["id"] for job in shown["items"]]


def test_show_finds_jobs_by_text_id_submitter_and_dates() -> None:
    # Given jobs about two databases, posted by the user running the commands
    human = post_about(HUMAN)
    mouse = post_about(MOUSE)
    human_again = post_about(HUMAN)

    # When show searches, then it lists the matching jobs only, newest first
    assert listed("-q", HUMAN) == [human_again, human]
    assert listed("--search", "MUS_MUSCULUS") == [mouse]
    assert listed("--id", mouse[:8]) == [mouse]
    assert listed("--submitted-by", getpass.getuser()) == [human_again, mouse, human]
    assert listed("--submitted-by", "nobody-else") == []
    assert listed("--since", "2000-01-01", "-q", HUMAN) == [human_again, human]
    today = datetime.now(UTC).date().isoformat()
    assert listed("--until", today, "--sort", "created", "--order", "asc") == [
        human,
        mouse,
        human_again,
    ]
    assert listed("--until", "2000-01-01") == []


def test_show_sorts_by_duration_and_shows_it(home: Path) -> None:
    # Given a job that ran for 2 min 3 s, one that ran for 5 s and one still queued
    jobs = [post_about(HUMAN) for _ in range(3)]
    end = datetime.now(UTC) - timedelta(hours=1)
    store = JobStore(Settings(home=home).store_url)
    try:
        with store.transaction() as conn:
            for job_id, seconds in zip(jobs, (123, 5), strict=False):
                conn.execute(
                    update(JOBS)
                    .where(JOBS.c.id == job_id)
                    .values(
                        status=JobStatus.SUCCEEDED,
                        started_at=end - timedelta(seconds=seconds),
                        finished_at=end,
                    )
                )
    finally:
        store.dispose()

    # When show lists them by duration, longest first
    table = succeeded(prodinf("show", "--sort", "duration"))

    # Then the table says how long each ran, the one never started last, with none
    rows = table_rows(table)
    assert [row[0] for row in rows] == [jobs[0], jobs[1], jobs[2]]
    assert [row[-1] for row in rows] == ["2 min 3 s", "5.00 s", ""]
    assert "duration" in table
    assert listed("--sort", "duration", "--order", "asc") == [jobs[1], jobs[0], jobs[2]]
    assert show_json("--sort", "duration")["items"][0]["duration_seconds"] == 123.0


def test_a_bad_search_option_is_named() -> None:
    """When show is given a date it cannot read or an unknown sort, then it fails in one
    line naming the option."""
    assert_clean_failure(prodinf("show", "--since", "yesterday"), "--since", "ISO 8601")
    assert_clean_failure(prodinf("show", "--until", "2024-02-30"), "--until")
    bad_sort = prodinf("show", "--sort", "size")
    assert bad_sort.exit_code == 2 and "--sort" in bad_sort.output
