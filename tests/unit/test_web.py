"""The web pages, as a user sees them through Flask's test client (a real headless
Chromium shows them in ``tests/integration/test_browser.py``).

Jobs are put in their states for real: submitted through the job service and
driven by the runner in-process against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import create_engine
from sqlalchemy import text as sa_text

from prodinf import Flow, Step
from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.engine.context import StepContext
from prodinf.engine.registry import Registry, job_kind
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.store import upgrade
from tests.conftest import SITE_BODY
from tests.embedded import run, runtime_of, submit
from tests.loopback import Site
from tests.pages import csrf, input_value, page, text_of
from tests.sample_data import build_core_like

# -- the jobs list -----------------------------------------------------------------------------


def test_list_shows_jobs_with_status_and_progress(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    # Given a job that succeeded and one that failed
    good = run(app, "http_get", {"url": f"{site.base}/ok"}, submitted_by="alice")
    bad = run(app, "http_get", {"url": f"{site.base}/missing"}, submitted_by="bob")

    # When the user opens the jobs list
    html = page(client, "/")

    # Then each row shows its kind, status, progress and submitter, and links to the job
    row = text_of(html, f"job-{good}")
    assert "http_get" in row
    assert "succeeded" in row
    assert "1/1" in row
    assert "alice" in row
    row = text_of(html, f"job-{bad}")
    assert "failed" in row
    assert "0/1" in row
    assert "answered 404" in row
    assert "bob" in row
    assert f'href="/jobs/{good}"' in html
    # ...the counts per status sit on top, and nothing is active so the page stays put
    counts = text_of(html, "counts")
    assert "1 succeeded" in counts
    assert "1 failed" in counts
    assert "2 all" in counts
    assert 'http-equiv="refresh"' not in html


def test_list_refreshes_while_a_job_is_active(app: Flask, client: FlaskClient, site: Site) -> None:
    """Given a queued job, when the jobs list is opened, then it shows it and refreshes
    itself every 5 s.
    """
    submit(app, "http_get", {"url": f"{site.base}/ok"})

    html = page(client, "/")

    assert "queued" in html
    assert '<meta http-equiv="refresh" content="5">' in html


def test_list_filters_by_kind_and_status(app: Flask, client: FlaskClient, site: Site) -> None:
    """Given jobs of two kinds and statuses, when the list is filtered by status, by kind,
    or both, then it shows exactly the jobs that match, or says none does.
    """
    good = run(app, "http_get", {"url": f"{site.base}/ok"})
    bad = run(app, "http_get", {"url": f"{site.base}/missing"})
    waiter = submit(app, "wait_for_url", {"url": f"{site.base}/ok"})

    failed = page(client, "/?status=failed")
    assert bad in failed
    assert good not in failed
    assert waiter not in failed

    by_kind = page(client, "/?kind=wait_for_url")
    assert waiter in by_kind
    assert good not in by_kind
    assert bad not in by_kind

    none = page(client, "/?kind=wait_for_url&status=failed")
    assert "No jobs match these filters" in none


def test_list_pages_with_next_and_previous_links(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    """Given three jobs, when the list is opened two at a time, then each page shows its
    jobs, where it is, and links to the next and previous pages.
    """
    ids = [submit(app, "http_get", {"url": f"{site.base}/ok"}) for _ in range(3)]

    first = page(client, "/?limit=2")
    assert sum(job_id in first for job_id in ids) == 2
    assert "1\N{EN DASH}2 of 3" in first
    assert 'rel="prev"' not in first
    following = re.search(r'rel="next" href="(/\?limit=2&amp;after=[\w-]+)"', first)
    assert following is not None  # a cursor: the page after the last job shown

    second = page(client, unescape(following[1]))
    assert sum(job_id in second for job_id in ids) == 1
    assert "1 of 3" in second
    assert 'rel="next"' not in second
    previous = re.search(r'rel="prev" href="(/\?limit=2&amp;before=[\w-]+)"', second)
    assert previous is not None

    back = page(client, unescape(previous[1]))
    assert [job_id in back for job_id in ids] == [job_id in first for job_id in ids]

    # an offset still opens a page where it says
    third = page(client, "/?limit=2&offset=2")
    assert "3\N{EN DASH}3 of 3" in third


@pytest.mark.parametrize(
    ("query", "field"),
    [("status=bogus", "status"), ("limit=0", "limit"), ("offset=x", "offset")],
)
def test_list_rejects_a_bad_filter_naming_it(client: FlaskClient, query: str, field: str) -> None:
    """Given a bad filter, when the list is opened with it, then a 400 page names it."""
    html = page(client, f"/?{query}", 400)

    assert f"{field} must be" in html
    assert f"<code>{field}</code>" in html


# -- one job ------------------------------------------------------------------------------------


def test_job_page_shows_a_failed_jobs_error_steps_and_history(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    """Given a job that failed (its URL answered 404), when its page is opened, then it
    shows the params, the error, the step, the history, and a Retry button.
    """
    job_id = run(app, "http_get", {"url": f"{site.base}/missing", "timeout": 5})

    html = page(client, f"/jobs/{job_id}")

    params = json.loads(text_of(html, "job-params"))
    assert params == {"url": f"{site.base}/missing", "timeout": 5.0}
    error = text_of(html, "job-error")
    assert "PermanentError" in error
    assert "in step fetch" in error
    assert f"{site.base}/missing answered 404" in error
    step = text_of(html, "step-fetch")
    assert "failed" in step
    assert "1 attempt" in step
    assert "answered 404" in step
    history = text_of(html, "history")
    for event in ("job.submitted", "step.started", "step.failed", "job.failed"):
        assert event in history, f"{event} missing from {history}"
    assert ">Retry</button>" in html
    assert ">Cancel</button>" not in html
    assert 'http-equiv="refresh"' not in html


def test_job_page_shows_a_succeeded_jobs_result_and_step_output(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    """Given a job that succeeded, when its page is opened, then it shows the result, the
    step's output and the history, no error and no Retry.
    """
    job_id = run(app, "http_get", {"url": f"{site.base}/ok"})

    html = page(client, f"/jobs/{job_id}")

    result = json.loads(text_of(html, "job-result"))
    assert result["status_code"] == 200
    assert result["bytes"] == len(SITE_BODY)
    step = text_of(html, "step-fetch")
    assert "succeeded" in step
    assert '"sha256"' in step
    assert "job.succeeded" in text_of(html, "history")
    assert "job-error" not in html
    assert ">Retry</button>" not in html


def test_unknown_job_is_a_404_page(client: FlaskClient) -> None:
    """Given a job id nobody has, when its page is opened, then a 404 page says so, with
    the navigation.
    """
    html = page(client, "/jobs/no-such-job", 404)

    assert "no job &#39;no-such-job&#39;" in html
    assert 'href="/jobs/new"' in html  # the page still has the nav


def test_a_unique_start_of_an_id_opens_the_job(app: Flask, client: FlaskClient, site: Site) -> None:
    """Given a job, when its page is opened by the 8 characters pages and mails show,
    then it redirects to the job's page; 5 characters are too few, and say so."""
    job_id = submit(app, "http_get", {"url": f"{site.base}/ok"})

    answer = client.get(f"/jobs/{job_id[:8]}")

    assert answer.status_code == 302 and answer.headers["Location"].endswith(f"/jobs/{job_id}")
    assert "at least 6" in page(client, f"/jobs/{job_id[:5]}", 404)


def test_cancel_button_cancels_a_queued_job(app: Flask, client: FlaskClient, site: Site) -> None:
    """Given a queued job, whose page has a Cancel button, when it is pressed, then the job
    is cancelled and its page says so.
    """
    job_id = submit(app, "http_get", {"url": f"{site.base}/ok"})
    html = page(client, f"/jobs/{job_id}")
    assert ">Cancel</button>" in html
    assert 'http-equiv="refresh"' in html

    response = client.post(
        f"/jobs/{job_id}/cancel", data={"csrf_token": input_value(html, "csrf_token")}
    )

    assert response.status_code == 303
    assert response.headers["Location"] == f"/jobs/{job_id}"
    html = page(client, f"/jobs/{job_id}")
    assert "Job cancelled." in html
    assert 'class="badge badge-cancelled"' in html
    assert "job.cancelled" in text_of(html, "history")
    assert runtime_of(app).store.describe(job_id)["status"] == "cancelled"


def test_cancelling_a_finished_job_shows_a_message_not_an_error_page(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    """Given a job that has succeeded, when a Cancel from an older page is posted, then the
    page says it has already ended, succeeded.
    """
    job_id = run(app, "http_get", {"url": f"{site.base}/ok"})

    response = client.post(
        f"/jobs/{job_id}/cancel",
        data={"csrf_token": csrf(client, "/jobs/new")},  # from a page loaded before it ended
        follow_redirects=True,
    )

    assert response.status_code == 200
    assert f"job {job_id} has already ended: it is succeeded" in response.get_data(as_text=True)


def test_retry_button_queues_a_failed_job_again(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    """Given a failed job, when Retry is pressed, then it is queued again; when pressed
    again while queued, then the page says only an ended job can be retried.
    """
    job_id = run(app, "http_get", {"url": f"{site.base}/missing"})

    response = client.post(
        f"/jobs/{job_id}/retry",
        data={"csrf_token": csrf(client, f"/jobs/{job_id}")},
        follow_redirects=True,
    )

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Job queued for retry." in html
    assert "retrying fetch" in text_of(html, "history")
    assert runtime_of(app).store.describe(job_id)["status"] == "queued"
    # ...and retrying it again while it is queued is refused with a message
    response = client.post(
        f"/jobs/{job_id}/retry",
        data={"csrf_token": csrf(client, f"/jobs/{job_id}")},
        follow_redirects=True,
    )
    assert "only a failed, reverted or cancelled job can be retried" in response.get_data(
        as_text=True
    )


def test_posts_without_the_form_token_are_refused(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    """Given a queued job, when a cancel is posted with a forged token, then it is a 400
    naming csrf_token, and the job stays queued.
    """
    job_id = submit(app, "http_get", {"url": f"{site.base}/ok"})
    page(client, f"/jobs/{job_id}")

    response = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": "forged"})

    assert response.status_code == 400
    assert "csrf_token" in response.get_data(as_text=True)
    assert runtime_of(app).store.describe(job_id)["status"] == "queued"


# -- the new-job form ---------------------------------------------------------------------------


def test_form_fields_come_from_the_kinds_schema(client: FlaskClient) -> None:
    """Given a kind, when the new-job form is opened for it, then its fields, labels,
    descriptions and defaults come from the kind's params schema.
    """
    html = page(client, "/jobs/new?kind=wait_for_url")

    assert '<option value="wait_for_url" selected>' in html
    url = text_of(html, "field-params.url")
    assert "URL *" in url
    assert "A URL answering JSON with a `status` field." in url
    assert input_value(html, "params.interval") == "60.0"
    assert re.search(r'name="params.max_errors" value="10" step="1" min="1" max="1000"', html)


def test_form_without_a_url_keeps_the_values_and_says_what_is_missing(
    app: Flask, client: FlaskClient
) -> None:
    """Given the form posted without its required URL, then it is a 400 that marks the URL
    field, keeps what was typed, and stores nothing.
    """
    token = csrf(client, "/jobs/new")

    response = client.post(
        "/jobs/new",
        data={
            "csrf_token": token,
            "kind": "http_get",
            "params.url": "",
            "params.timeout": "12.5",
            "idempotency_key": "nightly-7",
        },
    )

    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Field required" in text_of(html, "field-params.url")
    assert 'class="field has-error" id="field-params.url"' in html
    assert input_value(html, "params.timeout") == "12.5"
    assert input_value(html, "idempotency_key") == "nightly-7"
    assert runtime_of(app).store.list_jobs()[1] == 0


def test_form_puts_a_bad_number_next_to_its_field(client: FlaskClient, site: Site) -> None:
    """Given the form posted with a timeout that is not a number, then the error sits next
    to that field, and the URL typed is kept.
    """
    response = client.post(
        "/jobs/new",
        data={
            "csrf_token": csrf(client, "/jobs/new"),
            "kind": "http_get",
            "params.url": f"{site.base}/ok",
            "params.timeout": "soon",
        },
    )

    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "valid number" in text_of(html, "field-params.timeout")
    assert input_value(html, "params.url") == f"{site.base}/ok"


def test_valid_form_submits_and_redirects_to_the_job(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    """Given a good form posted by a user, then it redirects to the new job, queued with
    the typed params, submitted by that user.
    """
    response = client.post(
        "/jobs/new",
        data={
            "csrf_token": csrf(client, "/jobs/new?kind=http_get"),
            "kind": "http_get",
            "params.url": f"{site.base}/ok",
            "params.timeout": "7",
        },
        headers={"X-Prodinf-User": "carol"},
    )

    assert response.status_code == 303
    match = re.fullmatch(r"/jobs/([0-9a-f-]{36})", response.headers["Location"])
    assert match
    job = runtime_of(app).store.describe(match.group(1))
    assert job["kind"] == "http_get"
    assert job["status"] == "queued"
    assert job["params"] == {"url": f"{site.base}/ok", "timeout": 7.0}
    assert job["submitted_by"] == "carol"
    html = page(client, response.headers["Location"])
    assert "Job submitted." in html
    assert "carol" in html


def test_idempotency_key_reused_shows_the_existing_job(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    """Given the form posted twice with one idempotency key, then both lead to one job,
    whose page says it exists already.
    """
    data = {"kind": "http_get", "params.url": f"{site.base}/ok", "idempotency_key": "once"}
    first = client.post("/jobs/new", data={**data, "csrf_token": csrf(client, "/jobs/new")})
    second = client.post("/jobs/new", data={**data, "csrf_token": csrf(client, "/jobs/new")})

    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    assert runtime_of(app).store.list_jobs()[1] == 1
    assert "exists already" in page(client, second.headers["Location"])


def test_unknown_kind_is_named_on_the_form(client: FlaskClient) -> None:
    """Given a kind nobody registered, when the form is opened for it, then a 400 names it."""
    html = page(client, "/jobs/new?kind=nope", 400)

    assert "unknown kind 'nope'" in text_of(html, "error-kind")


# -- a kind of our own: every input type, a graph of steps, text that looks like HTML ------------


class Colour(enum.Enum):
    red = "red"
    blue = "blue"


class NoteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(description="Free text.")
    copies: int = Field(default=2, ge=1, le=9, description="How many copies.")
    loud: bool = Field(default=False, description="Shout it.")
    colour: Colour = Colour.red
    tags: list[str] = Field(default_factory=list, description="Labels, as a JSON list.")


def _echo(ctx: StepContext) -> Any:
    params: NoteParams = ctx.params  # type: ignore[assignment]
    return {"step": ctx.step, "note": params.note}


@pytest.fixture
def note_app(settings: Settings) -> Iterator[Flask]:
    """An app whose only kind is ``note``: prepare, then left and right, then join."""
    kinds = Registry()

    @job_kind("note", params=NoteParams, into=kinds)
    def note(params: NoteParams) -> Flow:
        """Echo a note through four steps."""
        return Flow.of(
            Step("prepare", _echo),
            Step("left", _echo, after=("prepare",)),
            Step("right", _echo, after=("prepare",)),
            Step("join", _echo, after=("left", "right")),
        )

    runtime = Runtime(settings, create_celery(settings), kinds)
    app = create_app(settings, runtime=runtime)
    upgrade(runtime.store)
    yield app
    runtime.close()


def test_form_renders_every_input_type(note_app: Flask) -> None:
    """Given a kind with text, number, boolean, choice and list params, when its form is
    opened, then each gets its input, with limits and defaults.
    """
    html = page(note_app.test_client(), "/jobs/new")

    assert "Echo a note through four steps." in html
    assert "Note *" in text_of(html, "field-params.note")
    assert re.search(r'type="number" id="input-params.copies" [^>]*step="1" min="1" max="9"', html)
    assert re.search(r'type="checkbox" [^>]*name="params.loud" value="on">', html)
    assert re.search(r'<select id="input-params.colour" name="params.colour">', html)
    assert '<option value="red" selected>red</option>' in html
    assert re.search(r'<textarea id="input-params.tags" name="params.tags"[^>]*></textarea>', html)


def test_form_submits_typed_values(note_app: Flask) -> None:
    """Given the form filled in for every input type, when posted, then the job holds
    each value as its type.
    """
    client = note_app.test_client()
    response = client.post(
        "/jobs/new",
        data={
            "csrf_token": csrf(client, "/jobs/new"),
            "kind": "note",
            "params.note": "hi",
            "params.copies": "3",
            "params.loud": "on",
            "params.colour": "blue",
            "params.tags": '["a", "b"]',
        },
    )

    assert response.status_code == 303, response.get_data(as_text=True)
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    assert runtime_of(note_app).store.describe(job_id)["params"] == {
        "note": "hi",
        "copies": 3,
        "loud": True,
        "colour": "blue",
        "tags": ["a", "b"],
    }


def test_bad_json_is_named_next_to_its_field(note_app: Flask) -> None:
    """Given a list field holding JSON that does not parse, when posted, then the error
    sits next to it, and what was typed is kept.
    """
    client = note_app.test_client()
    response = client.post(
        "/jobs/new",
        data={
            "csrf_token": csrf(client, "/jobs/new"),
            "kind": "note",
            "params.note": "hi",
            "params.tags": "[a",
        },
    )

    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "not valid JSON" in text_of(html, "field-params.tags")
    assert ">[a</textarea>" in html


def test_job_page_shows_step_dependencies(note_app: Flask) -> None:
    """Given a job of four steps in a diamond, when its page is opened, then each step
    says what it ran after, and all four succeeded.
    """
    job_id = run(note_app, "note", {"note": "hi"})

    html = page(note_app.test_client(), f"/jobs/{job_id}")

    assert 'id="step-prepare-after"' not in html
    assert text_of(html, "step-left-after") == "after prepare"
    assert text_of(html, "step-right-after") == "after prepare"
    assert text_of(html, "step-join-after") == "after left, right"
    for step in ("prepare", "left", "right", "join"):
        assert "succeeded" in text_of(html, f"step-{step}")
        assert f'"step": "{step}"' in text_of(html, f"step-{step}")
    assert "4/4" in text_of(html, "summary")


def test_text_from_a_job_is_escaped_everywhere(note_app: Flask) -> None:
    # Given a job whose param, submitter and outputs hold markup
    evil = "<script>alert(1)</script>"
    job_id = run(note_app, "note", {"note": evil}, submitted_by="<b>mallory</b>")
    client = note_app.test_client()

    # Then neither the list, the job page nor a re-rendered form runs or renders it
    for html in (page(client, "/"), page(client, f"/jobs/{job_id}")):
        assert "<script>" not in html
        assert "<b>mallory" not in html
        assert "&lt;b&gt;mallory&lt;/b&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page(client, f"/jobs/{job_id}")
    response = client.post(
        "/jobs/new",
        data={
            "csrf_token": csrf(client, "/jobs/new"),
            "kind": "note",
            "params.note": evil,
            "params.copies": "0",
        },
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "<script>" not in html
    assert input_value(html, "params.note") == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_a_failed_healthchecks_page_shows_its_report(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    """Given a healthcheck that found a missing meta key, when its page is opened, then
    the report is there: each check with its outcome, count and example rows, the
    failed one first; and the history's traceback is behind a link for operators."""
    uri = f"sqlite:///{tmp_path / 'homo_sapiens_core_115_38'}.sqlite"
    build_core_like(uri, genes=5, release=115)
    engine = create_engine(uri.replace("sqlite:", "sqlite+pysqlite:", 1))
    with engine.begin() as conn:
        conn.execute(sa_text("DELETE FROM meta WHERE meta_key = 'assembly.name'"))
    engine.dispose()
    job_id = run(app, "healthcheck", {"database_uri": uri, "groups": ["meta", "generic"]})

    html = page(client, f"/jobs/{job_id}")

    report = text_of(html, "report")
    assert "meta_keys" in report and "FAILED" in report and "passed" in report
    assert report.index("FAILED") < report.index("passed")  # the failed check first
    assert "assembly.name" in text_of(html, "check-meta_keys")
    assert '<details class="operators"><summary>Traceback (for operators)</summary>' in html


def test_the_form_offers_what_users_submit_with_labels_in_words(client: FlaskClient) -> None:
    """When the new-job form is opened, then the kinds prodinf makes itself (job
    notifications, events' jobs) and those with a form of their own (handover) are not
    offered, and a param named src_uri reads "Source URI"."""
    html = page(client, "/jobs/new?kind=copy_database")

    for hidden in ("job_notification", "event", "event_notice", "handover"):
        assert f'<option value="{hidden}"' not in html
    assert "Source URI *" in text_of(html, "field-params.src_uri")
    assert "Target URI *" in text_of(html, "field-params.tgt_uri")


def test_run_again_fills_the_form_with_the_jobs_params(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    """Given a job, when its page's "Run again" is followed, then the form is filled with
    its kind and params, and submitting it makes a new job with the same params."""
    job_id = run(app, "http_get", {"url": f"{site.base}/ok", "timeout": 7})
    html = page(client, f"/jobs/{job_id}")
    assert f'href="/jobs/new?again={job_id}"' in html

    form = page(client, f"/jobs/new?again={job_id[:8]}")

    assert '<option value="http_get" selected>' in form
    assert input_value(form, "params.url") == f"{site.base}/ok"
    assert input_value(form, "params.timeout") == "7.0"
    data = {"csrf_token": input_value(form, "csrf_token"), "kind": "http_get"}
    data.update({"params.url": f"{site.base}/ok", "params.timeout": "7.0"})
    answer = client.post("/jobs/new", data=data)
    assert answer.status_code == 303 and job_id not in answer.headers["Location"]
