"""Handover on embedded defaults (SQLite store and databases): the checks, the stages,
revert, restart, the duplicate refusal and the copy cap, driven in this process as
workers would. The same on real servers: tests/integration/test_handover*.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, select, text, update

import prodinf.kinds  # noqa: F401  (registers the built-in kinds)
from prodinf.config import Settings
from prodinf.engine.registry import registry
from prodinf.engine.runner import Runner
from prodinf.exceptions import Conflict, ValidationError
from prodinf.kinds.handover import Handovers
from prodinf.kinds.handover.report import handover_detail
from prodinf.status import TERMINAL, StepStatus
from prodinf.store import JobStore, upgrade
from prodinf.store.models import JOBS, STEPS
from prodinf.store.types import utcnow
from tests.sample_data import build_core_like

NAME = "homo_sapiens_core_115_38"


def config(tmp_path: Path, **types: Any) -> Path:
    document = {
        "release_key": "schema_version",
        "types": types
        or {"core": {"window": {"opens": "2026-01-01T00:00:00Z"}, "stages": {
            "healthcheck": {"params": {"groups": ["meta"]}}, "copy": {}, "metadata": {},
            "events": {}}}},
        "staging": [{"name": "staging", "server": f"sqlite:///{tmp_path / 'staging'}"}],
    }  # fmt: skip
    path = tmp_path / "handover.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class Harness:
    """A store, a runner and the handover service, with messages driven in turn."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = JobStore(settings.store_url)
        upgrade(self.store)
        self.sent: list[str] = []
        publish = lambda job_id, queue: self.sent.append(job_id)  # noqa: E731
        self.runner = Runner(self.store, registry, settings, publish)
        self.handovers = Handovers(self.store, registry, settings, publish)

    def drive(self, rounds: int = 400) -> None:
        """Run what was sent; when nothing is, let time pass: waits and retries come due."""
        for _ in range(rounds):
            if not self.sent and not self._time_passes():
                return
            if self.sent:
                self.runner.drive(self.sent.pop(0))

    def _time_passes(self) -> bool:
        past = utcnow() - timedelta(seconds=1)
        with self.store.transaction() as conn:
            waiting = [
                str(j)
                for j in conn.scalars(
                    select(JOBS.c.id).where(JOBS.c.status.not_in(sorted(TERMINAL)))
                )
            ]
            conn.execute(
                update(STEPS)
                .where(STEPS.c.job_id.in_(waiting), STEPS.c.status == StepStatus.WAITING)
                .values(due_at=past)
            )
            conn.execute(update(JOBS).where(JOBS.c.id.in_(waiting)).values(next_run_at=past))
        self.sent.extend(waiting)
        return bool(waiting)

    def status(self, token: str) -> str:
        return str(self.store.describe(token)["status"])


@pytest.fixture
def hand(settings: Settings, tmp_path: Path) -> Iterator[Harness]:
    made = Harness(
        settings.model_copy(update={"handover_config": config(tmp_path), "release": 115})
    )
    yield made
    made.store.engine.dispose()


@pytest.fixture
def source(tmp_path: Path) -> str:
    folder = tmp_path / "production"
    folder.mkdir()
    uri = f"sqlite:///{folder / NAME}.sqlite"
    build_core_like(uri, genes=50, release=115)
    return uri


def submit(hand: Harness, uri: str, **extra: Any) -> str:
    made = hand.handovers.submit(
        {"src_uri": uri, "contact": "ada@example.org", "comment": "new build", **extra}
    )
    return str(made["token"])


def test_a_good_database_passes_every_stage(hand: Harness, source: str, tmp_path: Path) -> None:
    token = submit(hand, source)
    hand.drive()
    found = handover_detail(hand.store, token)
    assert found["status"] == "succeeded", found
    assert [s["status"] for s in found["stages"]] == ["succeeded"] * 4
    staged = tmp_path / "staging" / f"{NAME}.sqlite"
    assert staged.is_file()
    with create_engine(f"sqlite:///{staged}").connect() as conn:
        assert conn.scalar(text("SELECT COUNT(*) FROM gene")) == 50
    assert found["events"], "a first registration finds events"


def test_a_second_unfinished_handover_is_refused(hand: Harness, source: str) -> None:
    token = submit(hand, source)
    with pytest.raises(Conflict) as refused:
        submit(hand, source)
    assert refused.value.details["token"] == token
    hand.drive()
    again = submit(hand, source)  # a finished one does not block
    assert again != token


@pytest.mark.parametrize(
    ("change", "field", "said"),
    [
        ({"contact": "nobody"}, "contact", "not an email address"),
        ({"comment": ""}, "comment", "comment is required"),
        ({"notify": "sometimes"}, "notify", "notify must be"),
    ],
)
def test_bad_fields_are_refused_by_name(
    hand: Harness, source: str, change: dict[str, Any], field: str, said: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        submit(hand, source, **change)
    assert refused.value.field == field
    assert said in refused.value.message


def test_a_missing_database_is_refused(hand: Harness, tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        submit(hand, f"sqlite:///{tmp_path}/{NAME}.sqlite")
    assert refused.value.field == "src_uri"
    assert "no database" in refused.value.message


def test_a_metadata_failure_drops_the_staging_copy_and_restart_redoes_it(
    hand: Harness, source: str, tmp_path: Path
) -> None:
    token = submit(hand, source)
    staged = tmp_path / "staging" / f"{NAME}.sqlite"
    # a meta table the registration refuses: more rows than MAX_META_ROWS is too slow
    # to plant here; a missing metadata store is the fault instead
    bad = hand.settings.model_copy(update={"metadata_url": "sqlite:////nonexistent/dir/x.db"})
    hand.runner = Runner(hand.store, registry, bad, hand.runner.publish)
    hand.drive()
    found = handover_detail(hand.store, token)
    assert found["status"] == "failed"
    assert found["stage"] == "metadata"
    assert not staged.exists()
    assert any(s["reverted"] for s in found["stages"] if s["name"] == "copy")
    hand.runner = Runner(hand.store, registry, hand.settings, hand.runner.publish)
    hand.handovers.restart(token, "metadata")
    hand.drive()
    assert handover_detail(hand.store, token)["status"] == "succeeded"
    assert staged.is_file()


def test_the_detail_shows_the_token_itself_and_masks_passwords(hand: Harness, source: str) -> None:
    token = submit(hand, source, comment="built with mysql://u:pw-9z@host/db")
    found = handover_detail(hand.store, token)
    assert found["token"] == token
    assert "pw-9z" not in str(found)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"comment": "a\x00b"}, "comment"),
        ({"comment": "bad \ud800"}, "comment"),
        ({"src_uri": 42}, "src_uri"),
        ({"contact": ["a@b.org"]}, "contact"),
        ({"notify": {"when": "always"}}, "notify"),
    ],
)
def test_what_no_store_keeps_is_refused_by_name(
    hand: Harness, source: str, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        submit(hand, source, **change)
    assert refused.value.field == field


def test_the_shipped_staging_is_under_prodinf_home(
    settings: Settings, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the shipped handover configuration (staging ``sqlite:///staging``), when a
    handover is submitted from a process whose working directory is elsewhere, then the
    copy is staged in PRODINF_HOME/staging, where every worker of that home stages it,
    not in a folder of the working directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    made = Harness(settings.model_copy(update={"release": 115}))  # the shipped config
    try:
        token = submit(made, source)
        made.drive()
        assert made.status(token) == "succeeded", handover_detail(made.store, token)
    finally:
        made.store.engine.dispose()

    assert (settings.home / "staging" / f"{NAME}.sqlite").is_file()
    assert not list(elsewhere.iterdir())
