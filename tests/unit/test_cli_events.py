"""``prodinf event``, in-process through click's CliRunner on embedded defaults, with the
subscriptions shipped with prodinf (config/subscriptions.yaml)."""

from __future__ import annotations

from pathlib import Path

from tests.embedded import messages
from tests.unit.test_cli import assert_clean_failure, cli_env, prodinf, succeeded

__all__ = ["cli_env"]  # the same autouse fixture as test_cli.py: embedded, under home


ARGS = (
    "event",
    "new_assembly",
    "--dataset",
    "homo_sapiens_core_115_38",
    "--payload",
    "server_uri=mysql://ro@staging:3306",
    "--payload",
    "mirror_uri=mysql://rw@mirror:3306",
)


def test_a_dry_run_shows_the_processes_and_records_nothing(home: Path) -> None:
    out = succeeded(prodinf(*ARGS, "--dry-run"))
    assert "check-new-assembly: healthcheck:" in out
    assert "copy-new-assembly: copy_database after check-new-assembly:" in out
    assert "mysql://ro@staging:3306/homo_sapiens_core_115_38" in out
    assert messages(home) == []


def test_an_event_is_recorded_and_its_job_sent(home: Path) -> None:
    out = succeeded(prodinf(*ARGS, "--idempotency-key", "ev-1"))
    assert out.startswith("recorded event ")
    assert "starts copy-new-assembly, check-new-assembly" in out
    assert len(messages(home)) == 1
    again = succeeded(prodinf(*ARGS, "--idempotency-key", "ev-1"))
    assert again.startswith("existing event ")


def test_a_bad_payload_pair_names_its_option() -> None:
    assert_clean_failure(prodinf("event", "x", "--payload", "novalue"), "--payload")
