"""The new-job form as a user fills it in, through Flask's test client: who is told when
the job ends, list params picked from their choices (the healthcheck catalogue's checks),
labels from the params model's titles, and every bad field named at once.

(The form's first tests, its inputs by type and "run again", are in test_web.py; a real
Chromium fills this form in tests/integration/test_browser.py.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from prodinf import Flow, Step, choices
from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.engine.registry import Registry, job_kind, registry
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.store import upgrade
from tests.embedded import runtime_of, submit
from tests.loopback import Site
from tests.pages import csrf, input_value, page, text_of

#: The checks of the shipped catalogue, in its order.
CATALOGUE = [
    "reachable",
    "core_tables_present",
    "core_tables_not_empty",
    "foreign_keys",
    "core_columns_set",
    "meta_keys",
]


def ticked(html: str, name: str) -> list[str]:
    """The values of the ticked checkboxes named ``name``."""
    boxes = re.findall(rf'<input type="checkbox" name="{re.escape(name)}"[^>]*>', html)
    return [re.search(r'value="([^"]*)"', b).group(1) for b in boxes if " checked" in b]  # type: ignore[union-attr]


def offered(html: str, name: str) -> list[str]:
    """The values of every checkbox named ``name``, in page order."""
    return re.findall(rf'<input type="checkbox" name="{re.escape(name)}" value="([^"]*)"', html)


def textarea(html: str, name: str) -> str:
    """What the ``<textarea name=...>`` holds, as written in the page (escaped)."""
    match = re.search(rf'<textarea[^>]*name="{re.escape(name)}"[^>]*>(.*?)</textarea>', html, re.S)
    assert match, f"no textarea {name!r}"
    return match.group(1)


def post_form(client: FlaskClient, kind: str, data: dict[str, Any]) -> Any:
    token = csrf(client, f"/jobs/new?kind={kind}")
    return client.post("/jobs/new", data={"csrf_token": token, "kind": kind, **data})


def job_of(app: Flask, response: Any) -> dict[str, Any]:
    assert response.status_code == 303, response.get_data(as_text=True)
    job: dict[str, Any] = runtime_of(app).store.describe(response.headers["Location"][6:])
    return job


# -- notify -----------------------------------------------------------------------------------


def test_notify_inputs_ask_for_what_the_api_takes(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    """Given the form filled in with three addresses (commas, spaces, a new line), a webhook
    and "failure", when posted, then the job notifies exactly as one posted to the API with
    that notify, and its page says whom."""
    notify = {
        "email": ["ada@example.org", "grace@example.org", "bob@example.org"],
        "webhook": "https://hooks.example.org/prodinf",
        "when": "failure",
    }
    response = post_form(
        client,
        "http_get",
        {
            "params.url": f"{site.base}/ok",
            "notify.email": " ada@example.org, grace@example.org\nbob@example.org ",
            "notify.webhook": notify["webhook"],
            "notify.when": "failure",
        },
    )

    job = job_of(app, response)
    assert job["notify"] == notify
    by_api = client.post(
        "/api/v1/jobs",
        json={"kind": "http_get", "params": {"url": f"{site.base}/ok"}, "notify": notify},
    )
    assert by_api.status_code == 201
    assert client.get(by_api.json["url"]).json["notify"] == job["notify"]  # type: ignore[index]
    shown = text_of(page(client, response.headers["Location"]), "job-notify")
    assert "ada@example.org, grace@example.org, bob@example.org" in shown
    assert "https://hooks.example.org/prodinf" in shown
    assert "only if it does not succeed" in shown


def test_a_job_without_an_address_or_url_notifies_nobody(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    """Given the form posted with "when" left as chosen and no address nor URL, then the
    job asks for no notification (and its page lists none)."""
    response = post_form(
        client, "http_get", {"params.url": f"{site.base}/ok", "notify.when": "always"}
    )

    assert job_of(app, response)["notify"] is None
    assert 'id="job-notify"' not in page(client, response.headers["Location"])


def test_a_bad_address_and_a_bad_url_are_each_named_next_to_their_input(
    app: Flask, client: FlaskClient, site: Site
) -> None:
    """Given an address without an @ and a URL that is not http(s), when posted, then each
    input says what is wrong with it, keeps what was typed, and no job is stored."""
    response = post_form(
        client,
        "http_get",
        {
            "params.url": f"{site.base}/ok",
            "notify.email": "ada@example.org, bob.example.org",
            "notify.webhook": "gopher://hooks.example.org",
        },
    )

    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert text_of(html, "error-notify.email") == (
        "'bob.example.org' is not an email address: it needs exactly one @"
    )  # and not the good one
    assert "URL scheme should be 'http' or 'https'" in text_of(html, "error-notify.webhook")
    assert textarea(html, "notify.email") == "ada@example.org, bob.example.org"
    assert input_value(html, "notify.webhook") == "gopher://hooks.example.org"
    assert runtime_of(app).store.list_jobs()[1] == 0


def test_run_again_fills_the_notify_inputs(app: Flask, client: FlaskClient, site: Site) -> None:
    """Given a job that notifies two addresses and a webhook only on failure, when "Run
    again" opens the form, then those inputs hold them."""
    job_id = submit(
        app,
        "http_get",
        {"url": f"{site.base}/ok"},
        notify={
            "email": ["ada@example.org", "bob@example.org"],
            "webhook": "https://hooks.example.org/p",
            "when": "failure",
        },
    )

    form = page(client, f"/jobs/new?again={job_id}")

    assert textarea(form, "notify.email") == "ada@example.org, bob@example.org"
    assert input_value(form, "notify.webhook") == "https://hooks.example.org/p"
    assert '<option value="failure" selected>' in form


# -- list params picked from the catalogue --------------------------------------------------------


def test_healthcheck_checks_and_groups_are_picked_from_the_catalogue(
    app: Flask, client: FlaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the form is opened for a healthcheck, then its checks and groups are boxes to
    tick, one per catalogue entry, each check labelled with its group and what it checks;
    ticking two makes a job that runs those two."""
    html = page(client, "/jobs/new?kind=healthcheck")

    # the shipped catalogue, in order (a Python check a plugin registered in this
    # process, as an earlier test's may, comes after it)
    assert offered(html, "params.names")[: len(CATALOGUE)] == CATALOGUE
    assert offered(html, "params.groups")[:3] == ["core", "generic", "meta"]
    assert ticked(html, "params.names") == []
    names = text_of(html, "field-params.names")
    assert names.startswith("Checks ")  # the model's title
    assert "meta_keys (meta) — The meta table holds the required keys" in names
    assert "generic: reachable, foreign_keys" in text_of(html, "field-params.groups")
    assert "every check runs" in text_of(html, "field-params.groups")  # its description

    monkeypatch.chdir(tmp_path)  # the relative SQLite path is in the test's folder, a root
    response = post_form(
        client,
        "healthcheck",
        {
            "params.database_uri": "sqlite:///tmp/homo_sapiens_core_115_38.sqlite",
            "params.names": ["reachable", "meta_keys"],
        },
    )

    params = job_of(app, response)["params"]
    assert params["names"] == ["reachable", "meta_keys"]
    assert params["groups"] == []


def test_run_again_ticks_the_checks_the_job_ran(
    app: Flask, client: FlaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the relative SQLite path is in the test's folder, a root
    job_id = submit(
        app,
        "healthcheck",
        {"database_uri": "sqlite:///tmp/x.sqlite", "groups": ["meta"], "names": ["foreign_keys"]},
    )

    form = page(client, f"/jobs/new?again={job_id}")

    assert ticked(form, "params.groups") == ["meta"]
    assert ticked(form, "params.names") == ["foreign_keys"]
    assert input_value(form, "params.database_uri") == "sqlite:///tmp/x.sqlite"


def test_a_check_the_catalogue_lacks_is_kept_and_named_with_the_valid_ones(
    app: Flask, client: FlaskClient
) -> None:
    """Given a check name the catalogue does not have (a job from before it changed, or a
    hand-made post), then the form names it, lists the catalogue's, and keeps it ticked."""
    response = post_form(
        client,
        "healthcheck",
        {"params.database_uri": "sqlite:///tmp/x.sqlite", "params.names": ["reachable", "nope"]},
    )

    assert response.status_code == 400
    html = response.get_data(as_text=True)
    error = text_of(html, "field-params.names")
    assert "unknown check(s) 'nope'; the catalogue has reachable, core_tables_present," in error
    assert ticked(html, "params.names") == ["reachable", "nope"]
    assert runtime_of(app).store.list_jobs()[1] == 0


# -- a kind of our own: choices declared three ways, a title, a secret ------------------------


def _sizes() -> list[tuple[str, str, str]]:
    return [("s", "Small", "one core"), ("l", "Large", "eight cores")]


def _broken() -> list[str]:
    raise OSError("the catalogue is unreadable")


class BuildParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(title="What to build", description="A make target.")
    jobs: int = Field(default=1, ge=1, le=64)
    arches: list[Literal["x86_64", "aarch64"]] = ["x86_64"]
    size: str = Field(default="s", json_schema_extra=choices(_sizes))
    flags: list[str] = Field(default_factory=list, description="Compiler flags.")
    extra: list[str] = Field(default_factory=list, json_schema_extra=choices(_broken))
    token: SecretStr | None = None


@pytest.fixture
def build_app(settings: Settings) -> Iterator[Flask]:
    """An app whose kinds are ``build`` and the notification kind (so notify is offered)."""
    kinds = Registry()
    kinds.register(registry.get("job_notification"))

    @job_kind("build", params=BuildParams, into=kinds)
    def build(params: BuildParams) -> Flow:
        """Build a target."""
        return Flow.of(Step("make", lambda ctx: None))

    runtime = Runtime(settings, create_celery(settings), kinds)
    app = create_app(settings, runtime=runtime)
    upgrade(runtime.store)
    yield app
    runtime.close()


def test_choices_titles_and_lists_come_from_the_params_model(build_app: Flask) -> None:
    """Given a params model with a title, a list of Literal items, a value whose choices a
    function gives (with labels), a plain list, and a list whose choices cannot be listed,
    when the form is opened, then each gets the input that fits."""
    html = page(build_app.test_client(), "/jobs/new?kind=build")

    assert "What to build *" in text_of(html, "field-params.target")
    assert "A make target." in text_of(html, "field-params.target")
    assert offered(html, "params.arches") == ["x86_64", "aarch64"]
    assert ticked(html, "params.arches") == ["x86_64"]  # the default
    assert '<option value="s" selected>Small</option><option value="l">Large</option>' in html
    assert textarea(html, "params.flags") == ""
    assert 'placeholder="a, b, c or a JSON list"' in html
    assert textarea(html, "params.extra") == ""  # no choices to offer: typed as text
    assert re.search(r'<input type="password" id="input-params.token" name="params.token"', html)


def test_a_plain_list_takes_commas_and_choices_their_values(build_app: Flask) -> None:
    client = build_app.test_client()
    response = post_form(
        client,
        "build",
        {
            "params.target": "all",
            "params.arches": ["x86_64", "aarch64"],
            "params.size": "l",
            "params.flags": "-O2, -g\n-Wall",
        },
    )

    params = job_of(build_app, response)["params"]
    assert params["arches"] == ["x86_64", "aarch64"]
    assert params["size"] == "l"
    assert params["flags"] == ["-O2", "-g", "-Wall"]
    form = page(client, f"/jobs/new?again={response.headers['Location'][6:]}")
    assert textarea(form, "params.flags") == "-O2, -g, -Wall"
    assert ticked(form, "params.arches") == ["x86_64", "aarch64"]


def test_every_bad_field_is_named_at_once_and_what_was_typed_is_kept(build_app: Flask) -> None:
    """Given a form with a missing target, a number out of range, a choice that is not one,
    bad JSON in a list and a bad address, when posted, then each input says what is wrong
    with it, in one answer; what was typed is kept, except the secret."""
    client = build_app.test_client()
    response = post_form(
        client,
        "build",
        {
            "params.jobs": "99",
            "params.arches": ["x86_64", "sparc"],
            "params.flags": '["-O2"',
            "params.token": "s3cret",
            "notify.email": "nobody",
        },
    )

    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Field required" in text_of(html, "field-params.target")
    assert "less than or equal to 64" in text_of(html, "field-params.jobs")
    assert "'x86_64' or 'aarch64'" in text_of(html, "field-params.arches")
    assert "not valid JSON" in text_of(html, "field-params.flags")
    assert "is not an email address" in text_of(html, "field-notify.email")
    assert html.count('class="field has-error"') == 5
    assert input_value(html, "params.jobs") == "99"
    assert ticked(html, "params.arches") == ["x86_64", "sparc"]
    assert textarea(html, "params.flags") == "[&#34;-O2&#34;"
    assert textarea(html, "notify.email") == "nobody"
    assert "s3cret" not in html
    assert runtime_of(build_app).store.list_jobs()[1] == 0
