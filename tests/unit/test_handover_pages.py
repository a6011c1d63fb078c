"""The handover pages, as a user sees them through Flask's test client (a real headless
Chromium uses them in ``tests/integration/test_browser_handover.py``).

Given the portal on embedded defaults with a handover configuration staging to a SQLite
folder, and a production "server" that is a folder holding a SQLite core database
(``tests.sample_data.build_core_like``), with the handover's jobs driven in this process
as workers would; when the list, the form, a handover's page, Stop, Restart, or the bulk
form and page are used; then they show what the API shows, put a refusal next to the
field it names, and never show a password.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, select, text, update

from prodinf.config import Settings
from prodinf.engine.runner import Runner
from prodinf.kinds.handover import checks
from prodinf.kinds.handover.report import handover_detail
from prodinf.status import TERMINAL, StepStatus
from prodinf.store import JobStore
from prodinf.store.handovers import list_handovers
from prodinf.store.models import JOBS, STEPS
from prodinf.store.types import utcnow
from tests.embedded import messages, runtime_of
from tests.pages import csrf, has_class, input_value, page, text_of
from tests.sample_data import build_core_like
from tests.unit.test_handover import NAME, config

FIELDS = ("server_uri", "database", "contact", "comment", "notify")
#: The password of the production server in the password tests: never on a page.
PASSWORD = "pw-7f3a9"
UUID = "[0-9a-f-]{36}"


def handover_settings(home: Path, tmp_path: Path) -> Settings:
    """Embedded settings under ``home``, handing over core databases of release 115 to a
    SQLite staging folder under ``tmp_path``."""
    return Settings(
        home=home,
        reconcile_interval=0.2,
        lease_seconds=3.0,
        redrive_after=30.0,
        handover_config=config(tmp_path),
        release=115,
        sqlite_roots=[tmp_path],  # the production folder and the staging folder
    )


def production(tmp_path: Path, *names: str) -> Path:
    """A folder of SQLite core databases of release 115 (``NAME`` unless named)."""
    folder = tmp_path / "production"
    folder.mkdir(exist_ok=True)
    for name in names or (NAME,):
        build_core_like(f"sqlite:///{folder / name}.sqlite", genes=30, release=115)
    return folder


def drive_handover(
    app: Flask, token: str, runner: Runner | None = None, timeout: float = 30
) -> dict[str, Any]:
    """Drive the handover's job and every job it starts, in this process as workers
    would, until it ends, waits and retries coming due at once; the handover, as its
    page shows it."""
    rt = runtime_of(app)
    runner = runner or rt.runner
    deadline = time.monotonic() + timeout
    while True:
        for job_id in [token, *(j for j in due_now(rt.store) if j != token)]:
            runner.drive(job_id)
        found = handover_detail(rt.store, token)
        if found["job_status"] in TERMINAL or time.monotonic() > deadline:
            return found


def due_now(store: JobStore) -> list[str]:
    """Make every job that has not ended, and each of its waiting steps, due now; their ids."""
    past = utcnow() - timedelta(seconds=1)
    with store.transaction() as conn:
        open_ = [
            str(j)
            for j in conn.scalars(select(JOBS.c.id).where(JOBS.c.status.not_in(sorted(TERMINAL))))
        ]
        conn.execute(
            update(STEPS)
            .where(STEPS.c.job_id.in_(open_), STEPS.c.status == StepStatus.WAITING)
            .values(due_at=past)
        )
        conn.execute(update(JOBS).where(JOBS.c.id.in_(open_)).values(next_run_at=past))
    return open_


def submit_form(client: FlaskClient, form: dict[str, str], **headers: str) -> Any:
    """Post the handover form, loaded first with its token."""
    data = {"notify": "always", "action": "submit", **form}
    data["csrf_token"] = csrf(client, "/handovers/new")
    return client.post("/handovers/new", data=data, headers=headers)


def good_form(folder: Path, **changes: str) -> dict[str, str]:
    return {
        "server_uri": f"sqlite:///{folder}",
        "database": NAME,
        "contact": "ada@example.org",
        "comment": "new genebuild",
        **changes,
    }


def handed_over(app: Flask, client: FlaskClient, folder: Path, **changes: str) -> str:
    answer = submit_form(client, good_form(folder, **changes))
    assert answer.status_code == 303, answer.get_data(as_text=True)
    found = re.fullmatch(rf"/handovers/({UUID})", answer.headers["Location"])
    assert found, answer.headers["Location"]
    return found.group(1)


def stored(app: Flask) -> int:
    return list_handovers(runtime_of(app).store)[1]


@pytest.fixture
def settings(home: Path, tmp_path: Path) -> Settings:
    return handover_settings(home, tmp_path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return production(tmp_path)


# -- the list --------------------------------------------------------------------------------


def test_no_handovers_says_how_to_hand_one_over(client: FlaskClient) -> None:
    html = page(client, "/handovers")

    assert "No handovers." in text_of(html, "handovers-empty")
    assert 'href="/handovers/new"' in html
    assert '<a href="/handovers" aria-current="page">Handovers</a>' in html


def test_list_shows_handovers_and_filters_them(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    # Given a handover that succeeded and a newer one of another database still queued
    folder = production(tmp_path, NAME, "mus_musculus_core_115_39")
    done = handed_over(app, client, folder)
    drive_handover(app, done)
    queued = handed_over(app, client, folder, database="mus_musculus_core_115_39")

    # When the list is opened, then both show, newest first, with their status
    html = page(client, "/handovers")
    assert html.index(f"handover-{queued}") < html.index(f"handover-{done}")
    row = text_of(html, f"handover-{done}")
    for shown in (NAME, "core", "115", "staging", "ada@example.org", "succeeded"):
        assert shown in row
    assert f'<tr id="handover-{queued}" data-status="queued">' in html
    assert '<meta http-equiv="refresh" content="5">' in html
    assert "1\N{EN DASH}2 of 2" in html

    # And each filter shows exactly the handovers that match
    for query, expected in [
        ("status=succeeded", [done]),
        ("status=queued", [queued]),
        ("status=failed", []),
        (f"database={NAME}", [done]),
        ("type=core&release=115", [done, queued]),
        ("release=114", []),
        ("contact=ada@example.org", [done, queued]),
        ("contact=ben@example.org", []),
    ]:
        html = page(client, f"/handovers?{query}")
        assert [t for t in (done, queued) if f"handover-{t}" in html] == expected, query
    html = page(client, "/handovers?status=failed")
    assert "No handovers match these filters." in text_of(html, "handovers-empty")
    assert '<option value="failed" selected>' in html
    assert 'href="/handovers">Clear</a>' in html


def test_list_pages(app: Flask, client: FlaskClient, tmp_path: Path) -> None:
    names = [f"homo_sapiens_core_115_{n}" for n in (37, 38, 39)]
    folder = production(tmp_path, *names)
    for name in names:
        handed_over(app, client, folder, database=name)

    first = page(client, "/handovers?limit=2&type=core")
    assert "1\N{EN DASH}2 of 3" in first
    assert 'rel="next" href="/handovers?type=core&amp;limit=2&amp;offset=2"' in first
    second = page(client, "/handovers?limit=2&offset=2&type=core")
    assert "3\N{EN DASH}3 of 3" in second
    assert 'rel="prev" href="/handovers?type=core&amp;limit=2"' in second


@pytest.mark.parametrize(
    ("query", "field"),
    [("status=sleeping", "status"), ("release=abc", "release"), ("limit=0", "limit")],
)
def test_list_rejects_a_bad_filter_naming_it(client: FlaskClient, query: str, field: str) -> None:
    html = page(client, f"/handovers?{query}", 400)

    assert f"{field} must be" in html
    assert f"<code>{field}</code>" in html
    assert "Traceback" not in html


# -- the form --------------------------------------------------------------------------------


def test_form_lists_the_servers_databases(app: Flask, client: FlaskClient, folder: Path) -> None:
    # Given a server holding a core database and a file no naming rule reads
    build_core_like(f"sqlite:///{folder}/scratch.sqlite", genes=1)

    # When the form is opened with the server's URI
    html = page(client, f"/handovers/new?server_uri=sqlite:///{folder}")

    # Then it offers the core database with its type and release, and counts the other
    row = text_of(html, f"db-{NAME}")
    assert "core" in row and "115" in row and "38" in row
    assert f'type="radio" name="database" id="choose-{NAME}" value="{NAME}"' in html
    assert "1 more database" in text_of(html, "unmatched")
    assert input_value(html, "server_uri") == f"sqlite:///{folder}"
    for name in FIELDS:
        assert f'id="field-{name}"' in html
    assert '<a href="/handovers" aria-current="page">Handovers</a>' in html


def test_the_list_button_posts_and_shows_a_handover_in_flight(
    app: Flask, client: FlaskClient, folder: Path
) -> None:
    token = handed_over(app, client, folder)

    data = {"server_uri": f"sqlite:///{folder}", "action": "list"}
    answer = client.post(
        "/handovers/new", data={**data, "csrf_token": csrf(client, "/handovers/new")}
    )

    html = answer.get_data(as_text=True)
    assert answer.status_code == 200, html
    assert f'<a href="/handovers/{token}" class="in-flight">' in html
    assert "queued" in text_of(html, f"db-{NAME}")  # the handover's word, not its job's


def test_a_server_that_is_not_there_is_named(client: FlaskClient, tmp_path: Path) -> None:
    html = page(client, "/handovers/new?server_uri=nonsense", 400)

    assert "server_uri" in text_of(html, "error-server_uri")
    assert has_class(html, "field-server_uri", "has-error")
    assert "Traceback" not in html


def test_submit_lands_on_the_handover_which_shows_each_stage(
    app: Flask, client: FlaskClient, folder: Path, home: Path
) -> None:
    # When a user hands the database over
    answer = submit_form(client, good_form(folder), **{"X-Prodinf-User": "dora"})

    # Then they land on its page, queued, its message sent
    assert answer.status_code == 303, answer.get_data(as_text=True)
    token = answer.headers["Location"].rsplit("/", 1)[1]
    html = page(client, answer.headers["Location"])
    assert f"Handover of {NAME} submitted." in html
    assert 'data-status="queued"' in html
    assert 'id="stop-button"' in html and 'id="restart-form"' not in html
    assert f'action="/handovers/{token}/stop"' in html
    assert text_of(html, "summary") and token in html.split("</h1>")[0]
    assert '<meta http-equiv="refresh" content="5">' in html
    assert [m["args"] for m in messages(home)] == [[token]]
    assert runtime_of(app).store.describe(token)["submitted_by"] == "dora"

    # When its jobs run, then the page shows every stage succeeded, each with its times,
    # duration and job, and the events it dispatched
    found = drive_handover(app, token)
    assert found["status"] == "succeeded", found
    html = page(client, f"/handovers/{token}")
    assert text_of(html, "handover-status") == "succeeded"
    for stage in found["stages"]:
        block = text_of(html, f"stage-{stage['name']}")
        assert "succeeded" in block and "started" in block and "finished" in block
        assert re.search(r"\(\d+\.\d\d s\)", block), block
        if stage["job"]:
            assert f'href="/jobs/{stage["job"]["id"]}"' in html
    assert found["events"]
    for event in found["events"]:
        assert f'href="/events/{event["event_id"]}"' in html
    assert "ada@example.org" in text_of(html, "handover-contact")
    assert "new genebuild" in text_of(html, "handover-comment")
    assert 'id="restart-form"' in html and 'id="stop-button"' not in html
    assert f'action="/handovers/{token}/restart"' in html
    assert 'http-equiv="refresh"' not in html


@pytest.mark.parametrize(
    ("change", "bad", "says"),
    [
        ({"contact": "nobody"}, "contact", "not an email address"),
        ({"contact": ""}, "contact", "contact is required"),
        ({"comment": "  "}, "comment", "comment is required"),
        ({"notify": "sometimes"}, "notify", "notify must be"),
        ({"database": ""}, "database", "choose the database"),
        ({"database": "homo_sapiens_core_115_37"}, "database", "there is no database"),
        ({"database": "not_a_name"}, "database", "matches no naming rule"),
        ({"server_uri": ""}, "server_uri", "server_uri is required"),
        ({"server_uri": "ftp://x"}, "server_uri", "unsupported scheme"),
    ],
)
def test_a_refusal_is_shown_next_to_the_field_it_names(
    app: Flask, client: FlaskClient, folder: Path, change: dict[str, str], bad: str, says: str
) -> None:
    answer = submit_form(client, good_form(folder, **change))

    html = answer.get_data(as_text=True)
    assert answer.status_code == 400, html
    assert "Traceback" not in html
    assert says in text_of(html, f"error-{bad}")
    assert [n for n in FIELDS if has_class(html, f"field-{n}", "has-error")] == [bad]
    assert 'id="error-form"' not in html
    if bad != "contact":
        assert input_value(html, "contact") == "ada@example.org"
    assert stored(app) == 0


def test_a_second_unfinished_handover_is_a_409_linking_to_the_first(
    app: Flask, client: FlaskClient, folder: Path
) -> None:
    first = handed_over(app, client, folder)

    answer = submit_form(client, good_form(folder))

    html = answer.get_data(as_text=True)
    assert answer.status_code == 409, html
    assert "unfinished handover" in text_of(html, "error-database")
    assert re.search(rf'<a href="/handovers/{first}" id="conflict-link">', html)
    assert stored(app) == 1


def test_posts_without_the_form_token_are_refused(
    app: Flask, client: FlaskClient, folder: Path
) -> None:
    token = handed_over(app, client, folder)
    form = {**good_form(folder), "action": "submit", "csrf_token": "forged"}

    for path, data in [
        ("/handovers/new", form),
        ("/handovers/bulk", {**form, "databases": NAME}),
        (f"/handovers/{token}/stop", {"csrf_token": "forged"}),
        (f"/handovers/{token}/restart", {"csrf_token": "forged", "from": "copy"}),
    ]:
        answer = client.post(path, data=data)
        assert answer.status_code == 400, path
        assert "csrf_token" in answer.get_data(as_text=True), path
    assert stored(app) == 1
    assert handover_detail(runtime_of(app).store, token)["status"] == "queued"


# -- one handover: failures, stop, restart ----------------------------------------------------


def test_a_failed_healthcheck_shows_the_failed_checks(
    app: Flask, client: FlaskClient, folder: Path
) -> None:
    # Given a database whose production name the meta checks refuse
    engine = create_engine(f"sqlite:///{folder / NAME}.sqlite")
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE meta SET meta_value = 'Not A Name' WHERE meta_key = :k"),
            {"k": "species.production_name"},
        )
    engine.dispose()
    token = handed_over(app, client, folder)

    found = drive_handover(app, token)

    # Then its page says it failed at healthcheck, highlights that stage, and lists the
    # failed check with what it found
    assert found["status"] == "failed", found
    html = page(client, f"/handovers/{token}")
    assert "Failed at healthcheck" in text_of(html, "handover-error")
    assert has_class(html, "stage-healthcheck", "stage-failed")
    assert not has_class(html, "stage-copy", "stage-failed")
    check = text_of(html, "check-meta_keys")
    assert "meta" in check and "species.production_name" in check
    assert text_of(html, "stage-healthcheck-error")
    # and it can be restarted from the failed stage, not stopped
    assert re.search(r'<option value="healthcheck" selected>', html)
    assert 'id="stop-button"' not in html


def test_a_metadata_failure_shows_the_staging_copy_dropped_and_restart_redoes_it(
    app: Flask, client: FlaskClient, folder: Path
) -> None:
    rt = runtime_of(app)
    bad = rt.settings.model_copy(update={"metadata_url": "sqlite:////nonexistent/dir/x.db"})
    token = handed_over(app, client, folder)

    found = drive_handover(app, token, Runner(rt.store, rt.registry, bad, rt.publish))

    assert found["stage"] == "metadata", found
    html = page(client, f"/handovers/{token}")
    assert "Failed at metadata" in text_of(html, "handover-error")
    assert has_class(html, "stage-metadata", "stage-failed")
    assert text_of(html, "stage-copy-reverted") == "reverted: the staging copy was dropped"
    assert re.search(r'<option value="metadata" selected>', html)

    # When the user restarts it from metadata
    answer = client.post(
        f"/handovers/{token}/restart",
        data={"from": "metadata", "csrf_token": csrf(client, f"/handovers/{token}")},
    )

    # Then they are back on its page, which says so, and it runs to the end
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"/handovers/{token}"
    assert "Handover restarted from metadata." in page(client, f"/handovers/{token}")
    assert drive_handover(app, token)["status"] == "succeeded"


def test_restart_of_a_running_handover_or_from_no_stage_is_refused(
    app: Flask, client: FlaskClient, folder: Path
) -> None:
    token = handed_over(app, client, folder)
    for since, says in [("copy", "stop it before restarting it"), ("lunch", "from must be")]:
        answer = client.post(
            f"/handovers/{token}/restart",
            data={"from": since, "csrf_token": csrf(client, f"/handovers/{token}")},
        )
        assert answer.status_code == 303
        assert says in page(client, f"/handovers/{token}")


def test_stop_stops_a_running_handover(app: Flask, client: FlaskClient, folder: Path) -> None:
    token = handed_over(app, client, folder)

    answer = client.post(
        f"/handovers/{token}/stop", data={"csrf_token": csrf(client, f"/handovers/{token}")}
    )

    assert answer.status_code == 303
    html = page(client, answer.headers["Location"])
    assert "Handover stopped." in html
    assert text_of(html, "handover-status") == "stopped"
    assert 'id="restart-form"' in html
    # and stopping it again says it has ended
    client.post(f"/handovers/{token}/stop", data={"csrf_token": csrf(client, "/handovers/new")})
    assert "already" in page(client, f"/handovers/{token}")


def test_an_unknown_handover_is_a_404_page(client: FlaskClient) -> None:
    for path in ("/handovers/no-such-token", "/handovers/bulks/no-such-bulk"):
        html = page(client, path, 404)
        assert "no " in html and "Traceback" not in html


# -- bulk ------------------------------------------------------------------------------------


def test_bulk_hands_over_each_database_and_names_those_refused(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    folder = production(tmp_path, NAME, "mus_musculus_core_115_39")
    form = {
        "server_uri": f"sqlite:///{folder}",
        "databases": f"{NAME}\n\nmus_musculus_core_115_39\nhomo_sapiens_core_115_37\n",
        "pattern": "",
        "contact": "ada@example.org",
        "comment": "bulk build",
        "notify": "failure",
    }

    answer = client.post(
        "/handovers/bulk", data={**form, "csrf_token": csrf(client, "/handovers/bulk")}
    )

    assert answer.status_code == 303, answer.get_data(as_text=True)
    found = re.fullmatch(rf"/handovers/bulks/({UUID})", answer.headers["Location"])
    assert found
    html = page(client, answer.headers["Location"])
    assert "2 handovers submitted, 1 refused." in html
    assert text_of(html, "bulk-counts") == "2 handed over, 1 refused"
    assert "there is no database" in text_of(html, "answer-homo_sapiens_core_115_37-error")
    items, total = list_handovers(runtime_of(app).store, bulk_id=found.group(1))
    assert total == 2
    for item in items:
        assert f'href="/handovers/{item["token"]}"' in html
        assert text_of(html, f"{item['token']}-stage-healthcheck") == "healthcheck"

    # When one runs to its end, then its stages show succeeded at a glance
    token = next(i["token"] for i in items if i["database"] == NAME)
    drive_handover(app, token)
    html = page(client, answer.headers["Location"])
    for stage in ("healthcheck", "copy", "metadata", "events"):
        assert f'id="{token}-stage-{stage}" data-status="succeeded"' in html
    # and the list filtered by the bulk shows its two handovers
    listed = page(client, f"/handovers?bulk={found.group(1)}")
    assert all(f"handover-{i['token']}" in listed for i in items)


def test_bulk_by_pattern(app: Flask, client: FlaskClient, tmp_path: Path) -> None:
    folder = production(tmp_path, NAME, "mus_musculus_core_115_39")
    form = {
        "server_uri": f"sqlite:///{folder}",
        "databases": "",
        "pattern": "mus_*",
        "contact": "ada@example.org",
        "comment": "mice",
        "notify": "always",
    }
    answer = client.post(
        "/handovers/bulk", data={**form, "csrf_token": csrf(client, "/handovers/bulk")}
    )

    assert answer.status_code == 303
    html = page(client, answer.headers["Location"])
    assert 'id="answer-mus_musculus_core_115_39"' in html
    assert f'id="answer-{NAME}"' not in html


@pytest.mark.parametrize(
    ("change", "bad", "says"),
    [
        ({"contact": "nobody"}, "contact", "not an email address"),
        ({"databases": "", "pattern": ""}, "databases", "give databases"),
        ({"pattern": "x*"}, "databases", "not both"),
        ({"databases": "", "pattern": "zebra*"}, "pattern", "no database on the server"),
        ({"server_uri": ""}, "server_uri", "server_uri is required"),
    ],
)
def test_the_bulk_form_puts_a_refusal_next_to_its_field(
    app: Flask, client: FlaskClient, folder: Path, change: dict[str, str], bad: str, says: str
) -> None:
    form = {
        "server_uri": f"sqlite:///{folder}",
        "databases": NAME,
        "pattern": "",
        "contact": "ada@example.org",
        "comment": "bulk",
        "notify": "always",
        **change,
    }
    answer = client.post(
        "/handovers/bulk", data={**form, "csrf_token": csrf(client, "/handovers/bulk")}
    )

    html = answer.get_data(as_text=True)
    assert answer.status_code == 400, html
    assert says in text_of(html, f"error-{bad}")
    assert has_class(html, f"field-{bad}", "has-error")
    assert stored(app) == 0


# -- no password on any page -----------------------------------------------------------------


def test_no_page_shows_the_password_of_the_server(
    app: Flask, client: FlaskClient, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a production server URI with a password. SQLite takes none: the request's
    # release check (which would refuse it) is skipped, so the handover is recorded with
    # the password in its params and its healthcheck fails on it
    monkeypatch.setattr(checks, "check_release", lambda *args: None)
    server = f"sqlite://ro:{PASSWORD}@/{folder}/_.sqlite"
    pages: list[str] = []

    # When the user lists its databases: the URI shows masked
    listed = client.post(
        "/handovers/new",
        data={"server_uri": server, "action": "list", "csrf_token": csrf(client, "/handovers/new")},
    )
    pages.append(listed.get_data(as_text=True))
    assert listed.status_code == 200, pages[-1]
    masked = input_value(pages[-1], "server_uri")
    assert masked == f"sqlite://ro:***@/{folder}/_.sqlite"
    assert f'id="choose-{NAME}"' in pages[-1]

    # When they submit with a bad contact: refused, the URI still masked
    refused = submit_form(client, {**good_form(folder), "server_uri": masked, "contact": "x"})
    pages.append(refused.get_data(as_text=True))
    assert refused.status_code == 400
    assert input_value(pages[-1], "server_uri") == masked

    # When they correct it and submit the masked URI: it is handed over with the password
    answer = submit_form(client, {**good_form(folder), "server_uri": masked})
    assert answer.status_code == 303, answer.get_data(as_text=True)
    token = answer.headers["Location"].rsplit("/", 1)[1]
    with runtime_of(app).store.transaction() as conn:
        params = conn.scalar(select(JOBS.c.params).where(JOBS.c.id == token))
    assert PASSWORD in str(params)  # kept for the stages, never shown

    # And a bulk from the same server (its database refused: it has a handover in flight),
    # and a bulk form refused with the password typed in
    bulk = {"pattern": "", "contact": "ada@example.org", "comment": "bulk", "notify": "always"}
    made = client.post(
        "/handovers/bulk",
        data={**bulk, "server_uri": server, "databases": NAME,
              "csrf_token": csrf(client, "/handovers/bulk")},
    )  # fmt: skip
    assert made.status_code == 303
    again = client.post(
        "/handovers/bulk",
        data={**bulk, "server_uri": server, "databases": NAME, "contact": "nobody",
              "csrf_token": csrf(client, "/handovers/bulk")},
    )  # fmt: skip
    pages.append(again.get_data(as_text=True))
    assert again.status_code == 400
    # A masked URI this session does not hold is refused, naming the field
    other = app.test_client()
    lost = submit_form(other, {**good_form(folder), "server_uri": masked})
    pages.append(lost.get_data(as_text=True))
    assert "type the URI again" in text_of(pages[-1], "error-server_uri")

    found = drive_handover(app, token)
    assert (found["status"], found["stage"]) == ("failed", "healthcheck"), found
    stage_job = found["stages"][0]["job"]["id"]
    for path in (
        f"/handovers/{token}",
        "/handovers",
        made.headers["Location"],
        f"/handovers/new?server_uri={masked}",
        f"/jobs/{token}",
        f"/jobs/{stage_job}",
    ):
        pages.append(page(client, path))
    assert "ro:***@" in text_of(pages[-6], "handover-src")
    for html in pages:
        assert PASSWORD not in html
