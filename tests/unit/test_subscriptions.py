"""Subscriptions files: checked when prodinf starts, matched against events, params
rendered in a sandbox that sees the event and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from prodinf.config import Settings
from prodinf.exceptions import ValidationError
from prodinf.kinds.rules_files import check_rules_files
from prodinf.kinds.subscriptions import load_subscriptions, render

EVENT = {
    "id": "e-1",
    "type": "new_assembly",
    "source": "job 42",
    "dataset": {"name": "homo_sapiens_core_115_38", "type": "core", "release": 115},
    "payload": {"server_uri": "mysql://u@staging:3306", "mirror_uri": "mysql://u@mirror:3306"},
}

GOOD = """
subscriptions:
  - name: check
    on: ["new_*", "dataset.created"]
    where:
      {dataset: "*_core_*", type: core, release: [114, 115], payload: {server_uri: "*staging*"}}
    run:
      kind: healthcheck
      params: {database_uri: "{{ payload.server_uri }}/{{ dataset.name }}"}
  - name: copy
    on: [new_assembly]
    run:
      kind: copy_database
      params: {src_uri: "{{ payload.server_uri }}/x", tgt_uri: "{{ payload.mirror_uri }}/x"}
    after: [check]
  - name: variation-only
    on: [new_assembly]
    where: {type: variation}
    run: {kind: healthcheck, params: {database_uri: "sqlite:///x"}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(text)
    return path


def test_the_shipped_example_loads_and_matches_a_new_assembly() -> None:
    # Given the example shipped with prodinf (config/subscriptions.yaml)
    subs = load_subscriptions(None)

    # Then a new core assembly starts its check, and its copy after the check
    matched = {m.subscription: m for m in subs.matching(EVENT)}
    assert set(matched) == {"check-new-assembly", "copy-new-assembly"}
    assert matched["copy-new-assembly"].after == ["check-new-assembly"]
    assert matched["copy-new-assembly"].params == {
        "src_uri": "mysql://u@staging:3306/homo_sapiens_core_115_38",
        "tgt_uri": "mysql://u@mirror:3306/homo_sapiens_core_115_38",
    }
    assert Path("config/subscriptions.yaml").read_text() == (
        Path("prodinf/kinds/defaults/subscriptions.yaml").read_text()
    )


def test_matching_follows_the_globs_and_every_condition(tmp_path: Path) -> None:
    subs = load_subscriptions(write(tmp_path, GOOD))

    # A core 115 on staging: check and copy (the variation-only one does not match)
    assert [m.subscription for m in subs.matching(EVENT)] == ["check", "copy"]
    # Another release: only the copy, which then depends on nothing that runs
    other = {**EVENT, "dataset": {**EVENT["dataset"], "release": 116}}  # type: ignore[dict-item]
    assert [(m.subscription, m.after) for m in subs.matching(other)] == [("copy", [])]
    # Another type of event: nothing
    assert subs.matching({**EVENT, "type": "dataset.updated"}) == []


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("{name: a, on: [x], run: {kind: k}, colour: red}", "subscription 'a': colour: Extra"),
        ("{name: a, on: x, run: {kind: k}}", "subscription 'a': on: Input should be a valid list"),
        ("{name: a, on: ['[x'], run: {kind: k}}", "'[x' is not a glob pattern"),
        ("{name: 'a b', on: [x], run: {kind: k}}", "subscription 'a b': name: Value error"),
        ("{name: a, on: [x], run: {kind: k}, after: [b]}", "after: no subscription 'b'"),
        ("{name: a, on: [x], run: {kind: k, params: {p: '{{ x'}}}", "params.p: the template"),
        ("{name: a, on: [x]}", "subscription 'a': run: Field required"),
        ("{name: a, on: [x], run: {kind: k}, where: {release: abc}}", "where.release"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(tmp_path: Path, entry: str, says: str) -> None:
    path = write(tmp_path, f"subscriptions:\n  - {entry}\n")
    with pytest.raises(ValidationError) as caught:
        load_subscriptions(path)
    assert str(path) in caught.value.message
    assert says in caught.value.message


def test_a_cycle_of_after_is_refused(tmp_path: Path) -> None:
    text = """
subscriptions:
  - {name: a, on: [x], run: {kind: k}, after: [b]}
  - {name: b, on: [x], run: {kind: k}, after: [a]}
"""
    with pytest.raises(ValidationError, match="a cycle"):
        load_subscriptions(write(tmp_path, text))


def test_a_bad_file_stops_prodinf_at_start_naming_the_setting(tmp_path: Path) -> None:
    path = write(tmp_path, "subscriptions:\n  - {name: a, on: [x], run: {kind: k}, after: [z]}\n")
    with pytest.raises(ValidationError) as caught:
        check_rules_files(Settings(home=tmp_path, subscriptions=path))
    assert caught.value.message.startswith("invalid setting PRODINF_SUBSCRIPTIONS: ")
    assert "subscription 'a': after: no subscription 'z'" in caught.value.message


def test_params_render_with_their_types_and_text_as_text() -> None:
    rendered = render(
        {
            "release": "{{ dataset.release }}",
            "name": "db={{ dataset.name | upper }}",
            "nested": [{"who": "{{ event.source }}"}],
            "fixed": 3,
        },
        EVENT,
    )
    assert rendered == {
        "release": 115,
        "name": "db=HOMO_SAPIENS_CORE_115_38",
        "nested": [{"who": "job 42"}],
        "fixed": 3,
    }


@pytest.mark.parametrize(
    "template",
    [
        "{{ payload.nothere }}",
        "x{{ payload.nothere }}",
        "{{ payload.items }}",
        "{{ payload.items() }}",
        "{{ payload.__class__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
    ],
)
def test_a_template_reaching_outside_the_event_is_refused_naming_the_param(
    template: str,
) -> None:
    with pytest.raises(ValidationError) as caught:
        render({"database_uri": template}, EVENT)
    assert caught.value.message.startswith("params.database_uri: ")
