"""``prodinf handover | handovers | handover-show | handover-stop | handover-restart``,
in-process through click's CliRunner on embedded defaults, with a SQLite core database
to hand over and a handover configuration staging to a SQLite folder. No worker runs:
handovers stay queued here (tests/unit/test_handover.py drives them through)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from prodinf.cli import handovers as cli_handovers
from prodinf.status import JobStatus, StepStatus
from tests.embedded import messages
from tests.sample_data import build_core_like
from tests.unit.test_cli import assert_clean_failure, cli_env, prodinf, succeeded, table_rows
from tests.unit.test_handover import NAME, config

__all__ = ["cli_env"]  # the same autouse fixture as test_cli.py: embedded, under home

SUBMITTED = re.compile(rf"handover (\S+): {NAME} queued")


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A core database of release 115 to hand over, and the configuration staging it."""
    folder = tmp_path / "production"
    folder.mkdir()
    uri = f"sqlite:///{folder / NAME}.sqlite"
    build_core_like(uri, genes=20, release=115)
    monkeypatch.setenv("PRODINF_HANDOVER_CONFIG", str(config(tmp_path)))
    return uri


def hand_over(source: str, *extra: str) -> str:
    """Submit ``source`` and return its token."""
    out = succeeded(
        prodinf(
            "handover", source, "--contact", "ada@example.org", "--comment", "new build", *extra
        )
    )
    match = SUBMITTED.search(out)
    assert match, out
    return match.group(1)


def test_a_handover_is_submitted_and_its_token_printed(source: str, home: Path) -> None:
    """Given a good database, when it is handed over, then the token and the page are
    printed and its job's message is in the broker."""
    out = succeeded(
        prodinf(
            "handover", source, "--contact", "ada@example.org", "--comment", "new build",
            env={"PRODINF_PUBLIC_URL": "https://prodinf.example.org"},
        )
    )  # fmt: skip
    match = SUBMITTED.search(out)
    assert match, out
    assert f"page: https://prodinf.example.org/handovers/{match.group(1)}" in out
    assert len(messages(home)) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("--contact", "nobody"), "contact: 'nobody' is not an email address"),
        (("--comment", " "), "comment is required"),
    ],
)
def test_a_bad_field_is_refused_naming_it_with_exit_2(
    source: str, change: tuple[str, str], field: str
) -> None:
    args = {"--contact": "ada@example.org", "--comment": "new build"}
    args[change[0]] = change[1]
    result = prodinf("handover", source, *(x for pair in args.items() for x in pair))
    assert_clean_failure(result, field)
    assert result.exit_code == 2


def test_a_missing_database_is_refused_naming_src_uri(source: str, tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path}/{NAME}.sqlite"
    result = prodinf("handover", missing, "--contact", "ada@example.org", "--comment", "x")
    assert_clean_failure(result, "src_uri: ", "no database")
    assert result.exit_code == 2


def test_a_second_unfinished_handover_is_refused_naming_the_first(source: str) -> None:
    token = hand_over(source)
    result = prodinf("handover", source, "--contact", "ada@example.org", "--comment", "again")
    assert_clean_failure(result, "unfinished handover", token)
    assert result.exit_code == 2


def test_handovers_lists_it_and_show_gives_its_stages(source: str) -> None:
    token = hand_over(source)
    rows = table_rows(succeeded(prodinf("handovers")))
    assert [token[:8], NAME, "core", "115", "queued", "healthcheck"] == rows[0][:6]
    assert table_rows(succeeded(prodinf("handovers", "--status", "failed"))) == []
    out = succeeded(prodinf("handover-show", token[:8]))
    assert f"handover {token}: {NAME}" in out
    stages = [row[0] for row in table_rows(out)]
    assert stages == ["healthcheck", "copy", "metadata", "events"]


def test_a_running_handover_is_stopped_then_restarted(source: str, home: Path) -> None:
    """Given a handover not ended, then a restart is refused (exit 2); once stopped it
    is stopped, a second stop is refused, and a restart from a stage sends it again."""
    token = hand_over(source)
    refused = prodinf("handover-restart", token, "--from", "copy")
    assert_clean_failure(refused, "stop it before restarting it")
    assert refused.exit_code == 2

    assert f"handover {token}: stopped" in succeeded(prodinf("handover-stop", token))
    sent = len(messages(home))  # the handover's, and its notification's
    again = prodinf("handover-stop", token)
    assert_clean_failure(again, "already")
    assert again.exit_code == 2

    out = succeeded(prodinf("handover-restart", token, "--from", "healthcheck"))
    assert f"handover {token}: queued from healthcheck" in out
    assert len(messages(home)) == sent + 1


def test_an_unknown_token_or_stage_is_refused() -> None:
    result = prodinf("handover-stop", "not-a-token")
    assert_clean_failure(result, "no handover 'not-a-token'")
    assert result.exit_code == 2
    bad = prodinf("handover-restart", "x", "--from", "nowhere")
    assert bad.exit_code == 2 and "nowhere" in bad.output


def test_wait_prints_each_stage_as_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a handover whose copy fails, when --wait follows it, then a line is
    printed each time a stage changes status, and the command exits 1."""

    def stage(name: str, status: str, error: str | None = None) -> dict[str, Any]:
        ended = status in (StepStatus.SUCCEEDED, StepStatus.FAILED)
        return {
            "name": name,
            "status": status,
            "started_at": "2026-11-30T10:00:00+00:00",
            "finished_at": "2026-11-30T10:00:03.200000+00:00" if ended else None,
            "waiting_for": "a job" if status == StepStatus.WAITING else None,
            "error": error,
        }

    def detail(job_status: str, *stages: dict[str, Any]) -> dict[str, Any]:
        failed = job_status == JobStatus.FAILED
        return {
            "status": "failed" if failed else "running",
            "job_status": job_status,
            "stage": "copy",
            "stages": list(stages),
            "error": {"stage": "copy", "message": "disk full"} if failed else None,
        }

    seen = iter(
        [
            detail(JobStatus.WAITING, stage("healthcheck", StepStatus.WAITING)),
            detail(JobStatus.WAITING, stage("healthcheck", StepStatus.WAITING)),
            detail(
                JobStatus.FAILED,
                stage("healthcheck", StepStatus.SUCCEEDED),
                stage("copy", StepStatus.FAILED, "copy failed: disk full"),
            ),
        ]
    )
    monkeypatch.setattr(cli_handovers, "handover_detail", lambda _store, _token: next(seen))
    monkeypatch.setattr(cli_handovers, "POLL", 0.0)
    printed: list[str] = []
    monkeypatch.setattr(cli_handovers.click, "echo", printed.append)

    with pytest.raises(SystemExit) as ended:
        cli_handovers.follow_stages(SimpleNamespace(store=None), "tok", None)

    assert ended.value.code == 1
    assert printed == [
        "healthcheck  waiting    a job",
        "healthcheck  succeeded  (3.2 s)",
        "copy         failed     (3.2 s)  copy failed: disk full",
        "handover tok: failed at copy: disk full",
    ]
