"""``/api/v1/events`` and ``/api/v1/subscriptions`` on the embedded portal, with the
subscriptions shipped with prodinf (config/subscriptions.yaml)."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from prodinf.exceptions import ValidationError
from prodinf.runtime import SUBMIT_EVENT, Runtime
from prodinf.store.events import list_events
from tests.embedded import messages

EVENTS = "/api/v1/events"
NEW_ASSEMBLY = {
    "type": "new_assembly",
    "dataset": "homo_sapiens_core_115_38",
    "payload": {"server_uri": "mysql://ro@staging:3306", "mirror_uri": "mysql://rw@mirror:3306"},
}


def test_an_event_is_recorded_with_the_processes_it_starts(client: FlaskClient, home: Path) -> None:
    # When a new core assembly is reported
    answer = client.post(EVENTS, json=NEW_ASSEMBLY, headers={"X-Prodinf-User": "ana"})

    # Then it is recorded (201, Location), with its job queued on the event queue and the
    # processes the subscriptions start, their params rendered from the event
    assert answer.status_code == 201, answer.json
    event = answer.json
    assert event is not None
    assert answer.headers["Location"] == event["url"]
    assert (event["source"], event["status"]) == ("ana", "queued")
    processes = {p["subscription"]: p for p in event["processes"]}
    assert set(processes) == {"check-new-assembly", "copy-new-assembly", "tell-production"}
    assert processes["copy-new-assembly"]["after"] == ["check-new-assembly"]
    assert processes["check-new-assembly"]["params"]["database_uri"].endswith(
        "/homo_sapiens_core_115_38"
    )
    assert [m["args"] for m in messages(home)] == [[event["job_id"]]]

    # And it is listed and shown, each process with its (not yet started) job
    listed = client.get(EVENTS, query_string={"dataset": "homo_sapiens_core_115_38"}).json
    assert listed is not None and [e["id"] for e in listed["items"]] == [event["id"]]
    shown = client.get(event["url"]).json
    assert shown is not None
    assert [(p["subscription"], p["job"]) for p in shown["processes"]] == [
        ("copy-new-assembly", None),
        ("check-new-assembly", None),
        ("tell-production", None),
    ]


def test_a_dry_run_answers_the_processes_and_stores_nothing(
    client: FlaskClient, home: Path
) -> None:
    answer = client.post(EVENTS, query_string={"dry_run": "true"}, json=NEW_ASSEMBLY)
    assert answer.status_code == 200
    assert answer.json is not None and answer.json["dry_run"] is True
    assert len(answer.json["processes"]) == 3
    assert client.get(EVENTS).json["total"] == 0  # type: ignore[index]
    assert messages(home) == []


def test_a_repeated_key_answers_200_with_the_same_event(client: FlaskClient) -> None:
    body = {**NEW_ASSEMBLY, "idempotency_key": "ev-7"}
    first, again = client.post(EVENTS, json=body), client.post(EVENTS, json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["id"] == first.json["id"]  # type: ignore[index]


def test_bad_events_are_refused_naming_the_field(client: FlaskClient) -> None:
    for body, field in [
        ({"dataset": "x"}, "type"),
        ({"type": "x", "payload": "text"}, "payload"),
        ({"type": "x", "when": "now"}, "when"),
        ([1, 2], "body"),
    ]:
        answer = client.post(EVENTS, json=body)
        assert answer.status_code == 400, (body, answer.json)
        assert answer.json is not None and answer.json["field"] == field
    assert client.get(f"{EVENTS}/nope").status_code == 404
    assert client.get(EVENTS, query_string={"status": "sleeping"}).status_code == 400


def test_the_subscriptions_are_listed_as_the_file_states_them(client: FlaskClient) -> None:
    answer = client.get("/api/v1/subscriptions").json
    assert answer is not None
    assert [s["name"] for s in answer["items"]] == [
        "check-core",
        "copy-new-assembly",
        "check-new-assembly",
        "tell-production",
    ]


def test_submit_event_records_once_per_task_id(app: Flask, home: Path) -> None:
    # Given the Celery task ``submit_event.delay(...)`` sends (run here, in this process)
    runtime: Runtime = app.extensions["prodinf"]
    task = runtime.celery.tasks[SUBMIT_EVENT]

    # When it runs twice with one task id (a redelivered message)
    kwargs = {"dataset": NEW_ASSEMBLY["dataset"], "payload": NEW_ASSEMBLY["payload"]}
    first = task.apply(args=["new_assembly"], kwargs=kwargs, task_id="t-1").get()
    again = task.apply(args=["new_assembly"], kwargs=kwargs, task_id="t-1").get()

    # Then one event was recorded, with what it starts, and its job was sent once
    assert first["id"] == again["id"]
    assert sorted(first["processes"]) == [
        "check-new-assembly",
        "copy-new-assembly",
        "tell-production",
    ]
    assert list_events(runtime.store)[1] == 1
    assert [m["args"] for m in messages(home)] == [[first["job_id"]]]


def test_submit_event_with_bad_input_fails_naming_the_field(app: Flask) -> None:
    runtime: Runtime = app.extensions["prodinf"]
    result = runtime.celery.tasks[SUBMIT_EVENT].apply(args=["new_assembly"], kwargs={"payload": 3})
    assert isinstance(result.result, ValidationError)
    assert result.result.field == "payload"
