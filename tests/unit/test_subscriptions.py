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

    # Then a new core assembly starts its check, its copy after the check, and a mail to
    # the production team coalesced by dataset
    matched = {m.subscription: m for m in subs.matching(EVENT)}
    assert set(matched) == {"check-new-assembly", "copy-new-assembly", "tell-production"}
    mail = matched["tell-production"]
    assert mail.kind == "event_notice" and mail.params is not None
    assert mail.params["email"] == ["production@example.org"]
    assert mail.params["subject"] == "New assembly for homo_sapiens_core_115_38"
    assert (mail.coalesce_key, mail.window) == ("homo_sapiens_core_115_38", 600)
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
        ("{name: a, on: [x], run: {}}", "give exactly one of kind (or service), email and"),
        ("{name: a, on: [x], run: {kind: k, email: [a@b.org]}}", "not kind or service and email"),
        ("{name: a, on: [x], run: {email: [a@b.org], params: {p: 1}}}", "params go with a kind"),
        ("{name: a, on: [x], run: {kind: k, subject: hi}}", "subject goes with an email"),
        ("{name: a, on: [x], run: {webhook: '{{ x'}}", "webhook: the template does not"),
        ("{name: a, on: [x], run: {kind: k}, coalesce: {key: '{{ x', window: 5}}", "coalesce"),
        ("{name: a, on: [x], run: {kind: k}, coalesce: {key: k, window: 0}}", "window"),
        ("{name: a, on: [x], run: {kind: k}, coalesce: {window: 5}}", "coalesce.key"),
        ("{name: a, on: [x], run: {kind: k}, queue: 'big mem'}", "queue: Value error"),
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


SERVICES = """
services:
  - {name: peer, type: prodinf, url: "http://peer.example.org"}
  - name: dc
    type: http
    url: http://dc.example.org
    submit: {path: /runs, body: {db: "{{ params.db }}"}}
    job_id: /id
    status_url: "/runs/{{ job_id }}"
    status: /state
    pending: [running]
    succeeded: [done]
    failed: [failed]
"""


@pytest.mark.parametrize(
    ("run", "says"),
    [
        ("{service: nowhere, kind: k}", "run.service: no service 'nowhere' in"),
        ("{service: peer}", "run.kind: name the kind to run on peer (another prodinf)"),
        ("{service: dc, kind: k}", "run.kind: dc is an HTTP job service; it runs no kinds"),
    ],
)
def test_a_subscription_naming_a_service_wrongly_stops_prodinf_at_start(
    tmp_path: Path, run: str, says: str
) -> None:
    (tmp_path / "services.yaml").write_text(SERVICES)
    path = write(tmp_path, f"subscriptions:\n  - {{name: a, on: [x], run: {run}}}\n")
    settings = Settings(home=tmp_path, subscriptions=path, services=tmp_path / "services.yaml")
    with pytest.raises(ValidationError) as caught:
        check_rules_files(settings)
    assert caught.value.message.startswith("invalid setting PRODINF_SUBSCRIPTIONS: ")
    assert f"subscription 'a': {says}" in caught.value.message


def test_each_kind_of_run_becomes_the_job_that_runs_it(tmp_path: Path) -> None:
    text = """
subscriptions:
  - name: here
    on: [new_assembly]
    run: {kind: healthcheck, params: {database_uri: "{{ payload.server_uri }}/x"}}
    queue: bigmem
  - name: there
    on: [new_assembly]
    run: {service: peer, kind: healthcheck, params: {database_uri: "{{ payload.server_uri }}"}}
  - name: dc
    on: [new_assembly]
    run: {service: dc, params: {db: "{{ dataset.name }}"}}
    coalesce: {key: "{{ dataset.name }}-{{ dataset.release }}", window: 30}
  - name: mail
    on: [new_assembly]
    run: {email: ["{{ payload.owner }}"]}
  - name: hook
    on: [new_assembly]
    run: {webhook: "https://hooks.example.org/{{ event.type }}"}
"""
    subs = load_subscriptions(write(tmp_path, text))
    event = {**EVENT, "payload": {**EVENT["payload"], "owner": "ann@example.org"}}  # type: ignore[dict-item]
    found = {m.subscription: m for m in subs.matching(event)}

    here, there, dc = found["here"], found["there"], found["dc"]
    assert (here.kind, here.queue, here.target) == ("healthcheck", "bigmem", "healthcheck")
    assert (there.kind, there.target) == ("remote_job", "healthcheck at peer")
    assert there.params == {
        "service": "peer",
        "kind": "healthcheck",
        "params": {"database_uri": "mysql://u@staging:3306"},
    }
    assert dc.params == {
        "service": "dc",
        "kind": None,
        "params": {"db": "homo_sapiens_core_115_38"},
    }
    assert (dc.coalesce_key, dc.window) == ("homo_sapiens_core_115_38-115", 30)
    mail, hook = found["mail"].params, found["hook"].params
    assert mail is not None and hook is not None
    assert found["mail"].kind == found["hook"].kind == "event_notice"
    assert mail["email"] == ["ann@example.org"] and mail["event"]["type"] == "new_assembly"
    assert hook["webhook"] == "https://hooks.example.org/new_assembly"


def test_a_coalescing_key_that_does_not_render_fails_that_process_only(tmp_path: Path) -> None:
    text = """
subscriptions:
  - {name: ok, on: [new_assembly], run: {kind: k}}
  - name: bad
    on: [new_assembly]
    run: {kind: k}
    coalesce: {key: "{{ payload.nothing }}", window: 5}
"""
    found = {m.subscription: m for m in load_subscriptions(write(tmp_path, text)).matching(EVENT)}
    assert found["ok"].error is None
    assert found["bad"].error is not None and "coalesce.key" in found["bad"].error
