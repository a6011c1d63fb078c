"""The "email me when it is done" form (``/notifications/new``) and its REST twin
(``/api/v1/notifications``), on embedded defaults: a SQLite store and the filesystem
broker under the test's home, no server and no worker.

Given the form as a browser loads it (with its token); when it is posted, good or with
a bad field; then a good one creates an ``email_when_complete`` job, stored and with
its run message in the broker, and a bad one is a 400 page that puts the error next to
the field it names, marks no good field, keeps what was typed, and stores nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from prodinf.config import Settings
from prodinf.runtime import Runtime
from tests.embedded import messages
from tests.pages import csrf, has_class, input_value, page, text_of

ADDRESS = "producer@example.org"
URL = "https://status.example.org/jobs/42"
FIELDS = ("url", "address", "interval")


def post(client: FlaskClient, form: dict[str, str], **headers: str) -> Any:
    data = {**form, "csrf_token": csrf(client, "/notifications/new")}
    return client.post("/notifications/new", data=data, headers=headers)


def marked(html: str) -> list[str]:
    """The fields the page marks as bad."""
    return [name for name in FIELDS if has_class(html, f"field-{name}", "has-error")]


def stored(app: Flask) -> int:
    runtime: Runtime = app.extensions["prodinf"]
    return runtime.store.list_jobs()[1]


def test_a_good_form_creates_the_notification_job(
    app: Flask, client: FlaskClient, home: Path, settings: Settings
) -> None:
    # Given the form, loaded with its token
    # When a user posts a URL, an address and an interval
    answer = post(
        client, {"url": URL, "address": ADDRESS, "interval": "30"}, **{"X-Prodinf-User": "dora"}
    )

    # Then they are sent to the new job's page
    assert answer.status_code == 303, answer.get_data(as_text=True)
    found = re.fullmatch(r"/jobs/([0-9a-f-]{36})", answer.headers["Location"])
    assert found, answer.headers["Location"]
    job_id = found.group(1)
    # and the job is an email_when_complete job, queued with what they typed, theirs
    runtime: Runtime = app.extensions["prodinf"]
    job = runtime.store.describe(job_id)
    assert (job["kind"], job["status"], job["submitted_by"]) == (
        "email_when_complete",
        "queued",
        "dora",
    )
    assert {k: job["params"][k] for k in FIELDS} == {
        "url": URL,
        "address": ADDRESS,
        "interval": 30.0,
    }
    assert stored(app) == 1
    # and its run message waits in the broker, on the email queue
    [message] = messages(home)
    assert (message["task"], message["args"]) == ("prodinf.run_job", [job_id])
    assert message["file"].endswith(f".{settings.queue_email}.msg")
    # and the job page says what will happen
    html = page(client, answer.headers["Location"])
    assert f"{ADDRESS} will be mailed when {URL} is done." in html


BAD_FORMS = [
    pytest.param({"url": "not a url", "address": ADDRESS}, "url", "valid URL", id="url-bad"),
    pytest.param({"url": "", "address": ADDRESS}, "url", "url is required", id="url-missing"),
    pytest.param(
        {"url": URL, "address": "nobody"}, "address", "not an email address", id="address-bad"
    ),
    pytest.param(
        {"url": URL, "address": ""}, "address", "address is required", id="address-missing"
    ),
    pytest.param(
        {"url": URL, "address": ADDRESS, "interval": "soon"},
        "interval",
        "interval must be a number",
        id="interval-not-a-number",
    ),
    pytest.param(
        {"url": URL, "address": ADDRESS, "interval": "0.01"},
        "interval",
        "greater than or equal to 0.1",
        id="interval-too-small",
    ),
]


@pytest.mark.parametrize(("form", "bad", "says"), BAD_FORMS)
def test_the_form_puts_the_error_next_to_the_bad_field_only(
    app: Flask, client: FlaskClient, home: Path, form: dict[str, str], bad: str, says: str
) -> None:
    # Given the form, loaded with its token
    # When it is posted with one bad field
    answer = post(client, form)

    # Then the page is a 400 without a traceback
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400, html
    assert "Traceback" not in html
    # whose error sits in the bad field's block, which alone is marked
    assert says in text_of(html, f"error-{bad}")
    assert says in text_of(html, f"field-{bad}")
    assert marked(html) == [bad]
    for good in FIELDS:
        if good != bad:
            assert f'id="error-{good}"' not in html
    assert 'id="error-form"' not in html
    # and what was typed is still there to correct
    for name, value in form.items():
        assert input_value(html, name) == value
    # and nothing was stored or sent
    assert stored(app) == 0
    assert messages(home) == []


def test_the_form_names_bad_fields_without_a_traceback(
    app: Flask, client: FlaskClient, home: Path
) -> None:
    # Given the form, loaded with its token
    # When it is posted with both the URL and the address bad
    answer = post(client, {"url": "not a url", "address": "nobody"})

    # Then the page is a 400 without a traceback that names a bad field next to it:
    # the error element of the field it marks, and no other
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400, html
    assert "Traceback" not in html
    [field] = marked(html)
    assert field in ("url", "address")
    error = text_of(html, f"error-{field}")
    assert error.startswith(f"{field}") and error in text_of(html, f"field-{field}")
    assert [name for name in FIELDS if f'id="error-{name}"' in html] == [field]
    assert not has_class(html, "field-interval", "has-error")  # left empty: it is optional
    assert input_value(html, "url") == "not a url"
    assert input_value(html, "address") == "nobody"
    assert stored(app) == 0
    assert messages(home) == []

    # And the REST twin names the field in the same way
    for body, named in [
        ({"url": "x"}, "address"),
        ({"url": "x", "address": ADDRESS}, "url"),
        ({"url": URL, "address": "nobody"}, "address"),
    ]:
        refused = client.post("/api/v1/notifications", json=body)
        assert refused.status_code == 400
        assert refused.get_json()["field"] == named, refused.get_json()
    assert stored(app) == 0
