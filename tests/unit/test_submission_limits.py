"""What a submission may not do (issue 14). A probe of the open portal submitted the
internal ``job_notification`` kind (it mailed a phishing text from prodinf's address; a
malformed one retried 100,000 times) and stored a 20 MB URL as a param (its job
document grew to 210 MB). Each is made again here and seen refused: through the API,
the CLI and the form, with a 400 naming the field."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import BaseModel, ConfigDict

import prodinf.kinds  # registers the built-in kinds
from prodinf import Flow, Step
from prodinf.config import Settings
from prodinf.engine.notices import NOTIFICATION_KIND, notification_job
from prodinf.engine.registry import Registry, job_kind, registry
from prodinf.exceptions import ValidationError
from prodinf.limits import MAX_PARAM_TEXT, MAX_PARAMS_BYTES, MAX_URL_LENGTH
from prodinf.mail import outbox_dir
from prodinf.portal import create_app
from prodinf.store import upgrade
from prodinf.store.submissions import insert_job
from prodinf.store.types import utcnow
from tests.embedded import runtime_of
from tests.pages import csrf
from tests.unit.test_api import JOBS, assert_clean_error
from tests.unit.test_cli import prodinf
from tests.world import World

PHISHING = {
    "job": {"id": "1", "kind": "x", "status": "succeeded", "result": "Your password expired"},
    "email": ["victim@example.org"],
}
#: A param as large as the probe's: 20 MB.
HUGE = 20 * 1024 * 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The portal's body limit (413, another check) would answer a 20 MB body first.
    return settings.model_copy(update={"max_request_bytes": 64 * 1024 * 1024})


@pytest.fixture
def cli(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``prodinf`` commands run as in a shell: embedded, under ``home``."""
    for name in list(os.environ):
        if name.startswith("PRODINF_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PRODINF_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    yield


def stored(app: Flask) -> int:
    return runtime_of(app).store.list_jobs()[1]


# -- internal kinds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("job_notification", PHISHING),
        ("event_notice", {"subscription": "s", "event": {"id": "e"}, "email": ["a@b.org"]}),
        ("event", {"event_id": "e"}),
    ],
)
def test_an_internal_kind_cannot_be_submitted_through_the_api(
    app: Flask, client: FlaskClient, kind: str, params: dict[str, Any]
) -> None:
    """Given a kind prodinf makes itself, when it is posted to /api/v1/jobs, then the 400
    names kind and says prodinf makes these itself; nothing is stored, nothing mailed."""
    answer = client.post(JOBS, json={"kind": kind, "params": params})

    assert_clean_error(answer, 400, "kind")
    assert "prodinf makes these jobs itself" in answer.json["message"]
    assert stored(app) == 0
    assert not outbox_dir(runtime_of(app).settings).exists()


def test_an_internal_kind_cannot_be_submitted_from_the_cli(cli: None) -> None:
    """Given prodinf post job_notification with a phishing text, then it exits 1 with one
    line naming kind, and no job is stored."""
    result = prodinf("post", "job_notification", "--json", json.dumps(PHISHING))

    assert result.exit_code == 1
    assert "kind 'job_notification': prodinf makes these jobs itself" in result.output
    assert "Traceback" not in result.output
    assert json.loads(prodinf("show", "--json").output)["total"] == 0


def test_an_internal_kind_cannot_be_submitted_with_the_form(
    app: Flask, client: FlaskClient
) -> None:
    """Given the job form posted with kind=job_notification (by hand: the form does not
    offer it), then the answer is a 400 whose message says why, and nothing is stored."""
    answer = client.post(
        "/jobs/new",
        data={
            "csrf_token": csrf(client, "/jobs/new"),
            "kind": "job_notification",
            "params.email": "victim@example.org",
        },
    )

    assert answer.status_code == 400
    assert "prodinf makes these jobs itself" in answer.get_data(as_text=True)
    assert stored(app) == 0


def test_prodinf_still_makes_its_own_notifications(world: World) -> None:
    """Given a job submitted with notify, when it ends, then its job_notification job is
    made and mails as before (the refusal is for callers only)."""
    world.registry.register(registry.get(NOTIFICATION_KIND))
    world.linear("ok", Step("build", lambda ctx: 1))
    job_id = world.submit("ok", notify={"email": ["producer@example.org"]})
    world.drive(job_id)

    (message,) = world.messages(job_id, "notification.queued")
    note = world.drive(message.split()[-1])

    assert note["status"] == "succeeded"
    assert len(list(outbox_dir(world.settings).glob("*.eml"))) == 1


def test_a_notification_whose_mail_cannot_be_rendered_fails_once(world: World) -> None:
    """Given a notification job made by prodinf whose snapshot its template cannot render
    (no message for a failed job's error), when it runs, then it fails at once, saying
    why, after one attempt: not retried 100,000 times, and nothing mailed."""
    world.registry.register(registry.get(NOTIFICATION_KIND))
    snapshot = {"id": "j1", "kind": "build", "status": "failed", "finished_at": None,
                "error": {"type": "X"}}  # fmt: skip
    new = notification_job(
        world.registry, world.settings, snapshot, {"email": ["a@example.org"]}, utcnow()
    )
    assert new is not None
    insert_job(world.store, new)

    note = world.drive(new.id)

    assert note["status"] == "failed"
    assert "could not be made" in note["error"]["message"]
    assert [step["attempts"] for step in note["steps"]] == [1]
    assert not outbox_dir(world.settings).exists()


# -- size limits -----------------------------------------------------------------------------


def test_a_20_mb_url_is_refused_naming_params_url(app: Flask, client: FlaskClient) -> None:
    """Given an http_get whose URL is 20 MB (the probe's), when it is posted, then the 400
    names params.url and says the limit, and nothing is stored."""
    url = "http://example.org/" + "a" * HUGE
    answer = client.post(JOBS, json={"kind": "http_get", "params": {"url": url}})

    assert_clean_error(answer, 400, "params.url")
    assert f"{MAX_PARAM_TEXT:,}" in answer.json["message"]
    assert len(answer.get_data()) < 2000  # the URL is not echoed back
    assert stored(app) == 0


def test_a_20_mb_url_is_refused_from_the_cli(cli: None) -> None:
    """The same from prodinf post: one line naming params.url, nothing stored."""
    result = prodinf("post", "http_get", "--json", json.dumps({"url": "http://h/" + "a" * HUGE}))

    assert result.exit_code == 1
    assert "params.url" in result.output and len(result.output) < 2000
    assert json.loads(prodinf("show", "--json").output)["total"] == 0


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("http_get", {"url": "http://h/" + "a" * MAX_URL_LENGTH}, "params.url"),
        ("wait_for_url", {"url": "http://h/" + "a" * MAX_URL_LENGTH}, "params.url"),
        ("healthcheck", {"database_uri": "mysql://u@h/" + "a" * MAX_URL_LENGTH},
         "params.database_uri"),
        ("copy_database", {"src_uri": "mysql://u@h/" + "a" * MAX_URL_LENGTH,
                           "tgt_uri": "mysql://u@h/b"}, "params.src_uri"),
    ],
)  # fmt: skip
def test_a_url_param_longer_than_8_kb_is_refused(
    client: FlaskClient, kind: str, params: dict[str, Any], field: str
) -> None:
    """Given a URL param one past its own limit (8,192 characters: a kind's field limit,
    well under the generic one), then the 400 names the field."""
    assert_clean_error(client.post(JOBS, json={"kind": kind, "params": params}), 400, field)


def test_a_notify_webhook_of_20_mb_is_refused_naming_it(client: FlaskClient) -> None:
    answer = client.post(
        JOBS,
        json={
            "kind": "http_get",
            "params": {"url": "http://example.org/"},
            "notify": {"webhook": "http://example.org/" + "a" * HUGE},
        },
    )
    assert_clean_error(answer, 400, "notify.webhook")


class FreeText(BaseModel):
    """A plugin's params with fields that set no length of their own."""

    model_config = ConfigDict(extra="forbid")
    note: str = ""
    lines: list[str] = []


@pytest.fixture
def plugin_app(settings: Settings) -> Iterator[Flask]:
    kinds = Registry()

    @job_kind("annotate", params=FreeText, into=kinds)
    def annotate(params: FreeText) -> Flow:
        return Flow.of(Step("note", lambda ctx: None))

    from prodinf.celery_app import create_celery
    from prodinf.runtime import Runtime

    runtime = Runtime(settings, create_celery(settings), kinds)
    app = create_app(settings, runtime=runtime)
    upgrade(runtime.store)
    yield app
    runtime.close()


def test_a_plugin_kind_gets_the_generic_limits(plugin_app: Flask) -> None:
    """Given a plugin kind whose fields set no length, then a string longer than 65,536
    characters is refused naming it, params larger than 256 KB in all are refused naming
    params, and params just under both are taken."""
    client = plugin_app.test_client()

    def post(params: dict[str, Any]) -> Any:
        return client.post(JOBS, json={"kind": "annotate", "params": params})

    assert_clean_error(post({"note": "x" * (MAX_PARAM_TEXT + 1)}), 400, "params.note")
    many = ["z" * 60_000] * (MAX_PARAMS_BYTES // 60_000 + 1)
    too_large = post({"lines": many})
    assert_clean_error(too_large, 400, "params")
    assert f"{MAX_PARAMS_BYTES:,}" in too_large.json["message"]
    assert post({"note": "x" * MAX_PARAM_TEXT, "lines": ["z" * 60_000] * 2}).status_code == 201
    assert stored(plugin_app) == 1


def test_python_callers_get_the_same_limits(world: World) -> None:
    """Given a submission from Python (what the CLI and the Celery task call), then a
    20 MB URL is a ValidationError naming params.url."""
    world.registry.register(registry.get("http_get"))
    with pytest.raises(ValidationError) as caught:
        world.jobs.submit("http_get", {"url": "http://h/" + "a" * HUGE})
    assert caught.value.field == "params.url"
