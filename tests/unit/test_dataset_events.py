"""The events a registration implies against the previous one, and the event rules file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prodinf.config import Settings
from prodinf.exceptions import ValidationError
from prodinf.kinds.database.events import (
    DEFAULT_EVENT_RULES,
    EventRules,
    Snapshot,
    events_between,
    load_event_rules,
)
from prodinf.kinds.rules_files import check_rules_files

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"gene": {"rows": 10, "checksum": "a1"}, "meta": {"rows": 3, "checksum": "b2"}}
META = {"assembly.default": "GRCh38", "genebuild.version": "15.0", "schema_version": "115"}


def snapshot(tables: dict[str, Any] | None = None, **meta: Any) -> Snapshot:
    return Snapshot(115, dict(tables or TABLES), {**META, **meta})


def test_the_shipped_rules_are_the_config_example() -> None:
    """Given the rules prodinf ships, then they are the config example, in order."""
    assert DEFAULT_EVENT_RULES.read_text() == (ROOT / "config" / "events.yaml").read_text()
    assert [r.event for r in load_event_rules().rules] == [
        "new_assembly",
        "new_genebuild",
        "schema_changed",
    ]


def test_a_first_registration_creates_the_dataset() -> None:
    """Given no earlier registration, when a dataset is registered, then it is created."""
    events = events_between(None, snapshot(), load_event_rules())

    assert events == [{"type": "dataset.created", "tables": ["gene", "meta"]}]


def test_nothing_changed_means_no_event() -> None:
    """Given two equal snapshots, then there is no event."""
    assert events_between(snapshot(), snapshot(), load_event_rules()) == []


def test_changed_added_and_removed_tables_are_an_update() -> None:
    """Given a table changed, one added and one removed, then one dataset.updated event
    names each, with the rows before and after.
    """
    after = {
        "gene": {"rows": 11, "checksum": "ff"},  # rows changed
        "xref": {"rows": 1, "checksum": "01"},  # added; meta removed
    }

    events = events_between(snapshot(), snapshot(after), load_event_rules())

    assert events == [
        {
            "type": "dataset.updated",
            "tables": {"changed": ["gene"], "added": ["xref"], "removed": ["meta"]},
            "rows": {"gene": {"before": 10, "after": 11}},
        }
    ]


def test_a_checksum_change_alone_is_an_update() -> None:
    """Given a table whose checksum changed with its rows the same, then it is updated."""
    after = {**TABLES, "gene": {"rows": 10, "checksum": "a2"}}

    (event,) = events_between(snapshot(), snapshot(after), load_event_rules())

    assert event["tables"]["changed"] == ["gene"]


def test_meta_key_rules_add_their_events() -> None:
    """Given meta keys that rules watch changed, then each rule adds its event, with the
    values before and after.
    """
    before = snapshot()
    after = snapshot(**{"assembly.default": "GRCh39", "genebuild.version": None})

    events = events_between(before, after, load_event_rules())

    assert [e["type"] for e in events] == ["new_assembly", "new_genebuild"]
    assert events[0]["meta"] == {"assembly.default": {"before": "GRCh38", "after": "GRCh39"}}
    assert events[1]["meta"] == {"genebuild.version": {"before": "15.0", "after": None}}


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"rules": [{"event": "x"}]}, "exactly `event` and `when_changed`"),
        ({"rules": [{"event": "", "when_changed": ["k"]}]}, "`event` must be a non-empty name"),
        ({"rules": [{"event": "x", "when_changed": []}]}, "a list of meta keys"),
        ({"rules": "x"}, "a list under `rules`"),
    ],
)
def test_bad_rules_are_refused(document: Any, fragment: str) -> None:
    """Given a bad rules document, when it is loaded, then the error names the file and
    the problem.
    """
    with pytest.raises(ValidationError, match=r"events\.yaml: ") as caught:
        EventRules.from_document(document, "events.yaml")

    assert fragment in caught.value.message


def test_a_bad_rules_file_stops_prodinf_as_it_starts(tmp_path: Path) -> None:
    """Given PRODINF_EVENT_RULES naming a file with a bad rule,
    when the rules files are checked (as every runtime does when it is built),
    then the error names the setting and what is wrong with the rule."""
    bad = tmp_path / "events.yaml"
    bad.write_text("rules:\n  - {event: new_assembly}\n")

    with pytest.raises(ValidationError, match="exactly `event` and `when_changed`") as caught:
        check_rules_files(Settings(event_rules=bad))

    assert caught.value.message.startswith("invalid setting PRODINF_EVENT_RULES: ")
    assert caught.value.field == "PRODINF_EVENT_RULES"
