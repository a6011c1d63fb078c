"""The mail a handover's contact gets when the handover ends: rendered from snapshots
of each ending, then once through the real path (a handover driven in this process on
embedded defaults, its notification job mailing to the outbox)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from prodinf.config import Settings
from prodinf.engine.notices import snapshot
from prodinf.mail import outbox_message, outbox_messages, render_handover_report
from tests.sample_data import build_core_like
from tests.unit.test_handover import NAME, Harness, config

BASE = "https://prodinf.example.org"
TOKEN = "0b5e6a40-0000-4000-8000-00000000c0de"
SECRET = "s3cret"
STAGES = ("healthcheck", "copy", "metadata", "events")


def params(**changes: Any) -> dict[str, Any]:
    """A handover job's params as submitted, with a password in the source URI."""
    made: dict[str, Any] = {
        "src_uri": f"mysql://u:{SECRET}@h/{NAME}",
        "database": NAME,
        "dataset": "homo_sapiens",
        "type": "core",
        "release": 115,
        "assembly": "38",
        "staging": {"name": "staging-1", "server": "mysql://stager@st-1:3306"},
        "contact": "ada@example.org",
        "comment": "new gene build",
        "stages": [{"name": n} for n in STAGES],
        "bulk_id": None,
    }
    return {**made, **changes}


def ended(status: str, *, error: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """A notification snapshot of a handover job that ended ``status``."""
    job = SimpleNamespace(
        id=TOKEN,
        kind="handover",
        status=status,
        params=params(**changes),
        result=None,
        error=error,
        progress_message=status,
        submitted_by="ada@example.org",
        created_at=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        finished_at=datetime(2026, 1, 5, 10, 0, tzinfo=UTC),
    )
    if status == "succeeded":
        job.result = {"events": [{"event_id": "ev-1", "type": "new_assembly"}]}
    return snapshot(job)


def stage_failed(stage: str, job_id: str, own: dict[str, Any]) -> dict[str, Any]:
    """The handover job's error when ``stage``'s job failed with error ``own``."""
    return {
        "type": "PermanentError",
        "message": f"{stage} failed: {own['message']}",
        "step": stage,
        "attempt": 1,
        "transient": False,
        "details": {"stage": stage, "job": job_id, "job_status": "failed", "error": own},
    }


HEALTHCHECK = {
    "type": "HealthchecksFailed",
    "message": f"{NAME}: 2 of 5 checks failed",
    "details": {
        "database": f"mysql://u:{SECRET}@h/{NAME}",
        "passed": False,
        "summary": {"run": 5, "passed": 3, "failed": 2, "skipped": 0, "seconds": 1.2},
        "checks": [
            {
                "name": "meta_keys",
                "group": "meta",
                "description": "The meta table holds the required keys.",
                "passed": False,
                "count": 1,
                "examples": [{"meta_key": "genebuild.version", "problem": "missing"}],
                "message": "1 meta key missing or invalid",
            },
            {
                "name": "foreign_keys",
                "group": "integrity",
                "description": "Every reference points at a row.",
                "passed": False,
                "count": 12,
                "examples": [{"table": "exon", "transcript_id": 7, "seq_region_id": None}],
                "message": "12 orphan rows",
            },
            {
                "name": "core_tables_present",
                "group": "schema",
                "description": "",
                "passed": True,
                "count": 0,
                "examples": [],
                "message": "all present",
            },
        ],
        "report": {"subject": "2 checks failed", "text": "...", "html": "<p>raw report</p>"},
    },
}


def failed_at_healthcheck() -> dict[str, Any]:
    return ended("failed", error=stage_failed("healthcheck", "hc-job-1", HEALTHCHECK))


def reverted_at_metadata() -> dict[str, Any]:
    own = {"type": "PermanentError", "message": "the metadata store is not reachable"}
    return ended("reverted", error=stage_failed("metadata", "md-job-1", own))


def stopped() -> dict[str, Any]:
    return ended("cancelled")


def succeeded() -> dict[str, Any]:
    return ended("succeeded")


def lines(body: str) -> list[str]:
    return [line.strip() for line in body.splitlines()]


def stage_lines(body: str) -> list[str]:
    """The text part's stage list: ``<stage>: <outcome>``, without the notes."""
    return [line.split(" (")[0] for line in lines(body) if line.startswith(STAGES)]


# -- subjects -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "subject"),
    [
        (succeeded, f"[prodinf] handover of {NAME} succeeded"),
        (failed_at_healthcheck, f"[prodinf] handover of {NAME} failed at healthcheck"),
        (reverted_at_metadata, f"[prodinf] handover of {NAME} failed at metadata"),
        (stopped, f"[prodinf] handover of {NAME} stopped"),
    ],
)
def test_the_subject_names_the_database_and_the_outcome(job: Any, subject: str) -> None:
    assert render_handover_report(job(), BASE)[0] == subject


# -- bodies ---------------------------------------------------------------------------


def test_a_succeeded_handover_lists_its_facts_and_every_stage() -> None:
    _, body, html = render_handover_report(succeeded(), BASE)
    for part in (body, html):
        for fact in (NAME, "core", "115", "staging-1", "ada@example.org", "new gene build"):
            assert fact in part
        assert "1 event: new_assembly" in part
    assert stage_lines(body) == [f"{s}: succeeded" for s in STAGES]
    assert "events: succeeded (1 event: new_assembly)" in lines(body)


def test_a_healthcheck_failure_lists_the_failed_checks_with_counts_and_examples() -> None:
    _, body, html = render_handover_report(failed_at_healthcheck(), BASE)
    assert "healthcheck: failed" in lines(body)
    assert {"copy: not run", "metadata: not run", "events: not run"} <= set(lines(body))
    assert "FAILED meta_keys (meta): 1 found" in lines(body)
    assert "- meta_key=genebuild.version, problem=missing" in lines(body)
    assert "FAILED foreign_keys (integrity): 12 found" in lines(body)
    assert "- table=exon, transcript_id=7, seq_region_id=NULL" in lines(body)
    assert "... and 11 more" in lines(body)
    assert "Checks: 3 passed, 2 failed" in lines(body)
    assert "core_tables_present" not in body  # a passed check is not news
    assert "<strong>12</strong> found" in html
    assert "<li>meta_key=genebuild.version, problem=missing</li>" in html
    assert "<li>table=exon, transcript_id=7, seq_region_id=NULL</li>" in html
    assert "raw report" not in body + html  # the healthcheck's own report is not pasted


def test_a_metadata_failure_says_why_and_that_the_staging_copy_was_dropped() -> None:
    _, body, html = render_handover_report(reverted_at_metadata(), BASE)
    assert lines(body)[:1] == [f"The handover of {NAME} failed at metadata."]
    assert "healthcheck: succeeded" in lines(body)
    assert "copy: succeeded (copy dropped)" in lines(body)
    assert "metadata: failed" in lines(body)
    assert "events: not run" in lines(body)
    dropped = "The staging copy on staging-1 was dropped"
    for part in (body, html):
        assert "the metadata store is not reachable" in part
        assert dropped in part


def test_a_failure_after_the_copy_that_was_not_reverted_says_the_copy_remains() -> None:
    own = {"message": "no registration"}
    _, body, _ = render_handover_report(
        ended("failed", error=stage_failed("events", "ev-job", own)), None
    )
    assert "The staging copy on staging-1 could not be dropped: it is still in place." in body


def test_a_stopped_handover_says_so() -> None:
    _, body, html = render_handover_report(stopped(), BASE)
    assert f"The handover of {NAME} was stopped before it finished." in body
    assert "healthcheck, copy, metadata, events" in body
    assert "failed" not in body + html


def test_links_go_to_the_handover_page_and_the_failed_stage_job() -> None:
    _, body, html = render_handover_report(failed_at_healthcheck(), BASE)
    for part in (body, html):
        assert f"{BASE}/handovers/{TOKEN}" in part
        assert f"{BASE}/jobs/hc-job-1" in part
    assert f'href="{BASE}/handovers/{TOKEN}"' in html
    _, body, html = render_handover_report(failed_at_healthcheck(), None)
    assert "http" not in body
    assert "href" not in html
    assert "hc-job-1" in body  # still named, without a link


@pytest.mark.parametrize("job", [succeeded, failed_at_healthcheck, reverted_at_metadata, stopped])
def test_no_password_appears_anywhere(job: Any) -> None:
    made = job()
    assert SECRET not in repr(made["params"])  # the snapshot masks the params
    # (the healthcheck error here still holds it, to show the mail masks it too)
    subject, body, html = render_handover_report(made, BASE)
    assert SECRET not in subject + body + html
    assert "mysql://u:***@h/" in body


def test_html_is_escaped_and_the_text_part_holds_no_markup() -> None:
    job = ended("failed", error=stage_failed("healthcheck", "j", HEALTHCHECK))
    job["params"]["comment"] = "see <script>alert(1)</script> & co"
    _, body, html = render_handover_report(job, BASE)
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "see <script>alert(1)</script> & co" in body  # text is text
    assert not re.search(r"</?(p|table|tr|td|strong|li|ul|a|div|code|html)\b", body)


def test_a_snapshot_without_params_still_renders() -> None:
    job = succeeded()
    del job["params"]
    subject, body, _ = render_handover_report(job, None)
    assert subject == f"[prodinf] handover of job {TOKEN} succeeded"
    assert TOKEN in body


# -- the real path --------------------------------------------------------------------


@pytest.fixture
def hand(settings: Settings, tmp_path: Path) -> Iterator[Harness]:
    update = {"handover_config": config(tmp_path), "release": 115, "public_url": BASE}
    made = Harness(settings.model_copy(update=update))
    yield made
    made.store.engine.dispose()


def handed_over(hand: Harness, tmp_path: Path, *, spoil: str | None = None) -> str:
    """Build a source database (``spoil``: SQL run on it), hand it over, drive to the end."""
    folder = tmp_path / "production"
    folder.mkdir()
    uri = f"sqlite:///{folder / NAME}.sqlite"
    build_core_like(uri, genes=50, release=115)
    if spoil:
        engine = create_engine(uri)
        with engine.begin() as conn:
            conn.execute(text(spoil))
        engine.dispose()
    made = hand.handovers.submit({"src_uri": uri, "contact": "ada@example.org", "comment": "x"})
    hand.drive()
    return str(made["token"])


def test_a_handover_that_succeeds_mails_its_contact_one_report(
    hand: Harness, tmp_path: Path
) -> None:
    token = handed_over(hand, tmp_path)
    assert hand.status(token) == "succeeded"
    (entry,) = outbox_messages(hand.settings)
    assert entry.subject == f"[prodinf] handover of {NAME} succeeded"
    assert entry.to == "ada@example.org"
    body = outbox_message(hand.settings, entry.name).text or ""
    assert f"{BASE}/handovers/{token}" in body
    assert stage_lines(body) == [f"{s}: succeeded" for s in STAGES]


def test_a_handover_failing_its_healthcheck_mails_the_failed_checks(
    hand: Harness, tmp_path: Path
) -> None:
    token = handed_over(hand, tmp_path, spoil="DELETE FROM meta WHERE meta_key = 'assembly.name'")
    assert hand.status(token) == "failed"
    (entry,) = outbox_messages(hand.settings)
    assert entry.subject == f"[prodinf] handover of {NAME} failed at healthcheck"
    body = outbox_message(hand.settings, entry.name).text or ""
    assert "FAILED meta_keys (meta)" in body
    assert "assembly.name" in body
    assert "copy: not run" in lines(body)
