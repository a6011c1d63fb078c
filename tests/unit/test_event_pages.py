"""The event pages, as a user sees them through Flask's test client (a real headless
Chromium uses them in ``tests/integration/test_browser_events.py``).

Given the portal on embedded defaults whose subscriptions fetch from a loopback site
(``tests/subscribed.py``), with events recorded for real and their processes driven
in this process as workers would; when the events list, an event's page or the form
that previews and records one is used; then it shows what the API shows, filters and
pages like the jobs list, and puts a bad input next to the field it names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from prodinf.config import Settings
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.store.events import list_events
from prodinf.store.models import JOBS
from tests.broker import Broker
from tests.embedded import messages, runtime_of
from tests.loopback import Site
from tests.pages import csrf, has_class, input_value, page, text_of
from tests.subscribed import CORE, drive_event, record, subscribed_settings

FIELDS = ("type", "dataset", "payload", "idempotency_key")


@pytest.fixture
def settings(home: Path) -> Settings:
    """The portal's settings: embedded, with the subscriptions of ``tests/subscribed.py``."""
    return subscribed_settings(home)


def post(client: FlaskClient, action: str, form: dict[str, str], **headers: str) -> Any:
    """Post the new-event form, loaded first with its token, pressing ``action``."""
    data = {**form, "action": action, "csrf_token": csrf(client, "/events/new")}
    return client.post("/events/new", data=data, headers=headers)


def stored(app: Flask) -> int:
    return list_events(runtime_of(app).store)[1]


# -- the events list -------------------------------------------------------------------------


def test_no_events_says_how_to_record_one(client: FlaskClient) -> None:
    # When the user opens the events list before any event is recorded
    html = page(client, "/events")

    # Then it says there is none and links to the form, and the nav marks Events
    assert "No events." in text_of(html, "events-empty")
    assert 'href="/events/new">Record one</a>' in html
    assert '<a href="/events" aria-current="page">Events</a>' in html


def test_list_shows_events_newest_first_with_dataset_and_status(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    # Given an event whose processes ran (one failed), then a newer one whose process
    # was started with it and has not ended
    old = record(
        app, type="dataset.updated", dataset=CORE, payload={"base": site.base}, source="ana"
    )
    drive_event(app, old["id"])
    new = record(app, type="dataset.created", payload={"base": site.base}, source="ben")

    # When the user opens the events list
    html = page(client, "/events")

    # Then the newer comes first, each row with its type, dataset and what the naming
    # rules read in it, source, its job's status and a link to the event
    assert html.index(f"event-{new['id']}") < html.index(f"event-{old['id']}")
    row = text_of(html, f"event-{old['id']}")
    for shown in ("dataset.updated", CORE, "type core", "release 115", "ana", "failed"):
        assert shown in row
    assert f'href="/events/{old["id"]}"' in html
    row = text_of(html, f"event-{new['id']}")
    assert ("dataset.created" in row, "ben" in row, "waiting" in row) == (True, True, True)
    assert re.search(rf'<tr id="event-{new["id"]}" data-status="waiting">', html)
    # ...and a waiting event keeps the page refreshing
    assert '<meta http-equiv="refresh" content="5">' in html
    assert "1\N{EN DASH}2 of 2" in html


def test_list_filters_by_type_dataset_and_status(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    # Given a failed dataset.updated of the core database and a queued dataset.created
    failed = record(app, type="dataset.updated", dataset=CORE, payload={"base": site.base})
    drive_event(app, failed["id"])
    queued = record(app, type="dataset.created", dataset="other_db", payload={"base": site.base})

    # When the list is filtered, then it shows exactly the events that match
    for query, shown in [
        ("type=dataset.created", [queued]),
        (f"dataset={CORE}", [failed]),
        ("status=failed", [failed]),
        ("status=waiting&type=dataset.created", [queued]),
        ("type=", [failed, queued]),
    ]:
        html = page(client, f"/events?{query}")
        assert [e["id"] for e in (failed, queued) if f"event-{e['id']}" in html] == [
            e["id"] for e in shown
        ], query
    # and the filters show what was asked, with a way to clear them
    html = page(client, "/events?status=failed&dataset=other_db")
    assert "No events match these filters." in text_of(html, "events-empty")
    assert '<option value="failed" selected>' in html
    assert input_value(html, "dataset") == "other_db"
    assert 'href="/events">Clear</a>' in html


def test_list_pages_with_next_and_previous_links(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    ids = [record(app, type="dataset.created", payload={"base": site.base})["id"] for _ in "abc"]

    first = page(client, "/events?limit=2&type=dataset.created")
    assert sum(event_id in first for event_id in ids) == 2
    assert "1\N{EN DASH}2 of 3" in first
    assert 'rel="next" href="/events?type=dataset.created&amp;limit=2&amp;offset=2"' in first
    assert 'rel="prev"' not in first

    second = page(client, "/events?limit=2&offset=2&type=dataset.created")
    assert sum(event_id in second for event_id in ids) == 1
    assert "3\N{EN DASH}3 of 3" in second
    assert 'rel="prev" href="/events?type=dataset.created&amp;limit=2"' in second
    assert 'rel="next"' not in second


@pytest.mark.parametrize(
    ("query", "field"),
    [("status=sleeping", "status"), ("limit=0", "limit"), ("offset=x", "offset")],
)
def test_list_rejects_a_bad_filter_naming_it(client: FlaskClient, query: str, field: str) -> None:
    html = page(client, f"/events?{query}", 400)

    assert f"{field} must be" in html
    assert f"<code>{field}</code>" in html


# -- one event -----------------------------------------------------------------------------


def test_event_page_shows_the_event_and_each_process(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    # Given an event whose processes ran: two fetched, one found a 404
    event = record(
        app,
        type="dataset.updated",
        dataset=CORE,
        payload={"base": site.base, "uri": "mysql://ro:pw-9c1@staging:3306"},
        source="ana",
        idempotency_key="ev-115",
    )
    job = drive_event(app, event["id"])
    assert job["status"] == "failed"

    # When its page is opened
    html = page(client, f"/events/{event['id']}")

    # Then it shows what happened to which dataset, from whom, and its job's status
    summary = text_of(html, "summary")
    for shown in ("failed", "dataset.updated", CORE, "type core", "release 115", "assembly 38"):
        assert shown in summary
    assert "ana" in summary and "ev-115" in summary
    assert text_of(html, "event-job") == event["job_id"]
    assert f'<a href="/jobs/{event["job_id"]}">' in html
    # ...the payload as JSON, its credentials masked
    assert json.loads(text_of(html, "event-payload")) == {
        "base": site.base,
        "uri": "mysql://ro:***@staging:3306",
    }
    assert "pw-9c1" not in html
    # ...and each process: its kind, what it came after, its status and its job
    children = {j["id"]: j for j in runtime_of(app).store.list_jobs(kind="http_get")[0]}
    assert len(children) == 3
    for name, status, after in [
        ("fetch", "succeeded", ""),
        ("fetch-release", "succeeded", "fetch"),
        ("fetch-missing", "failed", ""),
    ]:
        row = re.search(rf'<tr id="process-{name}" data-status="{status}">(.*?)</tr>', html, re.S)
        assert row, name
        assert "http_get" in row.group(1)
        assert f"<td>{after}</td>" in row.group(1)
        [child] = re.findall(r'href="/jobs/([0-9a-f-]{36})"', row.group(1))
        assert children[child]["status"] == status
    assert 'http-equiv="refresh"' not in html  # the event is over


def test_event_page_before_its_processes_start(app: Flask, client: FlaskClient, site: Site) -> None:
    # Given an event just recorded, one of whose params did not render (no payload.base)
    event = record(app, type="dataset.created")

    html = page(client, f"/events/{event['id']}")

    # Then its process is not started and says why it cannot be, and the page refreshes
    row = text_of(html, "process-fetch")
    assert "not started" in row
    assert "params.url: 'dict object' has no attribute 'base'" in row
    assert "queued" in text_of(html, "summary")
    assert '<meta http-equiv="refresh" content="5">' in html


def test_event_page_names_the_event_a_process_was_coalesced_into(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    # Given an event whose fetch was coalesced into an earlier event's (as coalescing
    # records it in the process)
    earlier = record(app, type="dataset.created", payload={"base": site.base})
    event = record(app, type="dataset.created", payload={"base": site.base})
    store = runtime_of(app).store
    params = store.describe(event["job_id"])["params"]
    into = {"event": earlier["id"], "job": earlier["job_id"]}
    params["processes"][0]["coalesced_into"] = into
    with store.transaction() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id == event["job_id"]).values(params=params))

    html = page(client, f"/events/{event['id']}")

    # Then its row says so, linking to that event and its job
    said = text_of(html, "coalesced-fetch")
    assert said.startswith("coalesced into event " + earlier["id"][:8])
    assert f'href="/events/{earlier["id"]}"' in html
    assert f'href="/jobs/{earlier["job_id"]}"' in html
    # and the API shows the same process
    shown = client.get(f"/api/v1/events/{event['id']}").json
    assert shown is not None and shown["processes"][0]["coalesced_into"] == into


def test_unknown_event_is_a_404_page(client: FlaskClient) -> None:
    html = page(client, "/events/no-such-event", 404)

    assert "no event &#39;no-such-event&#39;" in html
    assert 'href="/jobs/new"' in html  # the page still has the nav


def test_text_from_an_event_is_escaped(app: Flask, client: FlaskClient) -> None:
    evil = "<script>alert(1)</script>"
    event = record(app, type="x.<b>y</b>", dataset=evil, payload={"note": evil}, source=evil)

    for html in (page(client, "/events"), page(client, f"/events/{event['id']}")):
        assert "<script>" not in html
        assert "<b>y</b>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# -- the new-event form -----------------------------------------------------------------------


def test_form_has_the_fields_and_the_subscribed_types(client: FlaskClient) -> None:
    html = page(client, "/events/new?type=dataset.updated")

    for name in FIELDS:
        assert f'id="field-{name}"' in html
    assert input_value(html, "type") == "dataset.updated"
    assert "Subscribed to: dataset.*, dataset.updated" in text_of(html, "field-type")
    assert 'value="preview"' in html and 'value="record"' in html
    assert '<a href="/events" aria-current="page">Events</a>' in html


BAD_FORMS = [
    pytest.param({"type": ""}, "type", "type must be an event type", id="type-missing"),
    pytest.param({"type": "x" * 101}, "type", "1 to 100 characters", id="type-too-long"),
    pytest.param(
        {"type": "x", "dataset": "d" * 201}, "dataset", "1 to 200 characters", id="dataset-long"
    ),
    pytest.param({"type": "x", "payload": "{bad"}, "payload", "not valid JSON", id="payload-json"),
    pytest.param(
        {"type": "x", "payload": "[1, 2]"}, "payload", "must be a JSON object", id="payload-list"
    ),
    pytest.param(
        {"type": "x", "payload": "[" * 100_000},
        "payload",
        "payload",
        id="payload-deep",
    ),
    pytest.param(
        {"type": "x", "idempotency_key": "k" * 201},
        "idempotency_key",
        "1 to 200 characters",
        id="key-too-long",
    ),
]


@pytest.mark.parametrize("action", ["preview", "record"])
@pytest.mark.parametrize(("form", "bad", "says"), BAD_FORMS)
def test_the_form_puts_the_error_next_to_the_bad_field_only(
    app: Flask,
    client: FlaskClient,
    home: Path,
    action: str,
    form: dict[str, str],
    bad: str,
    says: str,
) -> None:
    # When the form is previewed or recorded with one bad field
    answer = post(client, action, form)

    # Then the page is a 400 whose error sits in that field's block, which alone is
    # marked, what was typed is kept, and nothing was recorded or sent
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400, html
    assert "Traceback" not in html
    assert says in text_of(html, f"error-{bad}")
    assert [n for n in FIELDS if has_class(html, f"field-{n}", "has-error")] == [bad]
    assert 'id="error-form"' not in html and 'id="preview"' not in html
    for name in ("type", "dataset", "idempotency_key"):
        if name in form and len(form[name]) < 100:
            assert input_value(html, name) == form[name]
    if "payload" in form and len(form["payload"]) < 100:
        assert f">{form['payload']}</textarea>" in html
    assert stored(app) == 0
    assert messages(home) == []


def test_preview_shows_the_processes_with_their_params_and_records_nothing(
    app: Flask, client: FlaskClient, home: Path, site: Site
) -> None:
    form = {
        "type": "dataset.updated",
        "dataset": CORE,
        "payload": json.dumps({"base": site.base}),
        "idempotency_key": "ev-1",
    }

    answer = post(client, "preview", form)

    html = answer.get_data(as_text=True)
    assert answer.status_code == 200, html
    assert "release 115" in text_of(html, "preview-dataset")
    assert json.loads(text_of(html, "match-fetch-params"))["url"] == f"{site.base}/ok"
    assert json.loads(text_of(html, "match-fetch-release-params"))["url"] == (
        f"{site.base}/ok?release=115"
    )
    assert "fetch" in text_of(html, "match-fetch-release")  # after
    assert "http_get" in text_of(html, "match-fetch-missing")
    # the form keeps what was typed, to record it next
    assert input_value(html, "type") == "dataset.updated"
    assert input_value(html, "idempotency_key") == "ev-1"
    assert stored(app) == 0
    assert messages(home) == []


def test_preview_names_a_process_whose_params_do_not_render(client: FlaskClient) -> None:
    html = post(client, "preview", {"type": "dataset.created", "payload": ""}).get_data(
        as_text=True
    )

    assert text_of(html, "match-fetch-error") == "params.url: 'dict object' has no attribute 'base'"
    assert 'id="match-fetch-params"' not in html


def test_preview_of_an_event_nobody_subscribes_to_says_it_starts_nothing(
    client: FlaskClient,
) -> None:
    html = post(client, "preview", {"type": "nobody.cares"}).get_data(as_text=True)

    assert "starts nothing" in text_of(html, "matches-empty")


def test_record_redirects_to_the_event(
    app: Flask, client: FlaskClient, home: Path, site: Site
) -> None:
    # When a user records an event
    form = {"type": "dataset.created", "dataset": "", "payload": json.dumps({"base": site.base})}
    answer = post(client, "record", form, **{"X-Prodinf-User": "dora"})

    # Then they land on its page, it is stored theirs, and its process's message is sent
    # (started with it, its job waiting for it)
    assert answer.status_code == 303, answer.get_data(as_text=True)
    found = re.fullmatch(r"/events/([0-9a-f-]{36})", answer.headers["Location"])
    assert found
    [event] = list_events(runtime_of(app).store)[0]
    assert (event["id"], event["type"], event["dataset"], event["source"]) == (
        found.group(1),
        "dataset.created",
        None,
        "dora",
    )
    [process] = runtime_of(app).store.list_jobs(kind="http_get")[0]
    assert [m["args"] for m in messages(home)] == [[process["id"]]]
    html = page(client, answer.headers["Location"])
    assert "Event recorded." in html
    row = text_of(html, "process-fetch")
    assert "queued" in row and process["id"][:8] in row


def test_a_repeated_idempotency_key_shows_the_first_event(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    form = {"type": "dataset.created", "payload": json.dumps({"base": site.base})}
    first = post(client, "record", {**form, "idempotency_key": "once"})
    again = post(client, "record", {**form, "idempotency_key": "once"})

    assert first.status_code == again.status_code == 303
    assert first.headers["Location"] == again.headers["Location"]
    assert stored(app) == 1
    assert "exists already" in page(client, again.headers["Location"])


def test_a_post_without_the_form_token_is_refused(app: Flask, client: FlaskClient) -> None:
    page(client, "/events/new")

    answer = client.post("/events/new", data={"type": "x", "action": "record", "csrf_token": "?"})

    assert answer.status_code == 400
    assert "csrf_token" in answer.get_data(as_text=True)
    assert stored(app) == 0


def test_a_broker_that_is_down_is_a_503_on_the_form_and_nothing_is_kept(
    app: Flask, client: FlaskClient, broker: Broker, home: Path, site: Site
) -> None:
    broker.publish("warm-up", "jobs")  # the queue folder exists
    broker.take()
    form = {"type": "dataset.created", "payload": json.dumps({"base": site.base})}
    token = csrf(client, "/events/new")

    with broker.down():
        answer = client.post("/events/new", data={**form, "action": "record", "csrf_token": token})

    html = answer.get_data(as_text=True)
    assert answer.status_code == 503, html
    assert "Traceback" not in html
    assert text_of(html, "error-form")
    assert input_value(html, "type") == "dataset.created"
    assert stored(app) == 0
    assert runtime_of(app).store.list_jobs()[1] == 0


@pytest.fixture
def app_without_store(home: Path) -> Iterator[Flask]:
    settings = subscribed_settings(home).model_copy(
        update={"database_url": "postgresql+psycopg://u:pw-4e2@127.0.0.1:1/x"}
    )
    app = create_app(settings)
    yield app
    runtime: Runtime = app.extensions["prodinf"]
    runtime.close()


def test_a_store_that_is_down_is_a_503_page_without_the_password(
    app_without_store: Flask,
) -> None:
    client = app_without_store.test_client()

    listed = client.get("/events")
    one = client.get("/events/some-id")
    recorded = post(client, "record", {"type": "dataset.created"})

    for answer in (listed, one, recorded):
        html = answer.get_data(as_text=True)
        assert answer.status_code == 503, html
        assert "Traceback" not in html and "pw-4e2" not in html
    assert "store" in text_of(recorded.get_data(as_text=True), "error-form")
    assert input_value(recorded.get_data(as_text=True), "type") == "dataset.created"
