"""The ``prodinf`` command line on embedded defaults, with no worker and no server.

Each command runs in-process through click's ``CliRunner`` against a real SQLite
store and a real filesystem broker under a temporary ``PRODINF_HOME`` (the
working directory is a temporary folder too, so nothing lands in ``./.prodinf``).
One test runs ``python -m prodinf.cli`` as a real process to see what a shell sees.
Jobs stay queued here: running them is the integration tier's business
(``tests/integration/test_cli_up.py``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, inspect, text, update

from prodinf.celery_app import create_celery
from prodinf.cli import main
from prodinf.config import Settings, get_settings
from prodinf.engine import newjob
from prodinf.runtime import Runtime
from prodinf.store import JobStore
from prodinf.store.models import JOBS
from tests.sample_data import build_core_like

UNREACHABLE = "http://127.0.0.1:1/x"  # valid, never fetched: no worker runs here
DB_PASSWORD = "pg-Pass-4711"
SECRET_KEY = "flask-Key-0815"
SMTP_PASSWORD = "smtp-Word-2342"


@pytest.fixture(autouse=True)
def cli_env(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Embedded defaults under ``home``, no PRODINF_* from the shell, a wide console."""
    for name in list(os.environ):
        if name.startswith("PRODINF_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PRODINF_HOME", str(home))
    monkeypatch.setenv("PRODINF_SQLITE_ROOTS", str(tmp_path))  # the test's databases
    monkeypatch.setenv("COLUMNS", "300")  # rich tables on one line per row
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()
    assert not (tmp_path / ".prodinf").exists(), "a command ignored PRODINF_HOME"


def prodinf(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``prodinf ARGS`` as a shell would, with settings read afresh."""
    get_settings.cache_clear()
    result = CliRunner().invoke(main, list(args), env=env)
    get_settings.cache_clear()
    return result


def succeeded(result: Result) -> str:
    """The standard output of a command that must have exited 0 (what a shell pipes on;
    a warning on stderr, such as no worker using this store, is not part of it)."""
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def assert_clean_failure(result: Result, *fragments: str) -> None:
    """Non-zero exit, a message holding every fragment, no traceback."""
    assert result.exit_code != 0, result.output
    # Anything but SystemExit means an exception escaped the command (a traceback in a shell).
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    assert "Error:" in result.output
    for fragment in fragments:
        assert fragment in result.output


def table_rows(output: str) -> list[list[str]]:
    """The body rows of the rich tables in ``output``, as lists of cell texts."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def post_queued(*extra: str) -> str:
    """Submit an http_get job (that no worker runs) and return its id."""
    out = succeeded(prodinf("post", "http_get", "-p", f"url={UNREACHABLE}", *extra))
    match = re.fullmatch(r"(submitted|existing) http_get job (\S+)", out.strip())
    assert match, out
    return match.group(2)


def show_json(*args: str) -> Any:
    return json.loads(succeeded(prodinf("show", "--json", *args)))


# -- settings and the store ------------------------------------------------------------------


def test_config_prints_settings_with_secrets_masked(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Given a database URL with a password, a secret key and an SMTP password,
    when ``prodinf config`` prints the settings (as a table and as JSON),
    then no secret appears, their masked forms do, and no log line holds a secret."""
    caplog.set_level(logging.DEBUG)
    env = {
        "PRODINF_DATABASE_URL": f"postgresql://prodinf:{DB_PASSWORD}@db.example.org/prodinf",
        "PRODINF_SECRET_KEY": SECRET_KEY,
        "PRODINF_SMTP_PASSWORD": SMTP_PASSWORD,
        "PRODINF_SMTP_USER": "mailer",
    }

    table = succeeded(prodinf("config", env=env))
    as_json = succeeded(prodinf("config", "--json", env=env))

    for out in (table, as_json):
        for secret in (DB_PASSWORD, SECRET_KEY, SMTP_PASSWORD):
            assert secret not in out
        assert "postgresql://prodinf:***@db.example.org/prodinf" in out
    rows = {row[0]: row[1] for row in table_rows(table)}
    assert rows["secret_key"] == rows["smtp_password"] == "**********"
    assert rows["smtp_user"] == "mailer"
    assert rows["home"] == str(home)
    values = json.loads(as_json)
    assert values["database_url"] == "postgresql://prodinf:***@db.example.org/prodinf"
    assert values["store_url (effective)"] == (
        "postgresql+psycopg://prodinf:***@db.example.org/prodinf"
    )
    assert values["secret_key"] == values["smtp_password"] == "**********"
    for secret in (DB_PASSWORD, SECRET_KEY, SMTP_PASSWORD):
        assert secret not in caplog.text


def test_a_bad_setting_is_named_without_its_value_or_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Given PRODINF_PORT that is not a number,
    when any command reads the settings,
    then it exits non-zero naming PRODINF_PORT, without echoing or logging the value."""
    caplog.set_level(logging.DEBUG)
    env = {"PRODINF_PORT": "not-a-port-9999"}

    for args in (["config"], ["show"], ["db", "upgrade"]):
        result = prodinf(*args, env=env)

        assert_clean_failure(result, "PRODINF_PORT", "integer")
        assert "not-a-port-9999" not in result.output
    assert "not-a-port-9999" not in caplog.text


def test_a_password_in_a_param_never_shows_or_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Given no worker running,
    when a job whose URL carries a password is posted, listed and shown (and as JSON),
    then the password appears in no output and no log line, and its masked form does."""
    caplog.set_level(logging.DEBUG)
    url = f"http://reader:{DB_PASSWORD}@127.0.0.1:1/x"

    posted = succeeded(prodinf("post", "http_get", "-p", f"url={url}"))
    job_id = posted.split()[-1]
    outputs = [
        posted,
        succeeded(prodinf("show")),
        succeeded(prodinf("show", job_id)),
        succeeded(prodinf("show", "--json", job_id)),
    ]

    for out in outputs:
        assert DB_PASSWORD not in out
    assert json.loads(outputs[-1])["params"]["url"] == "http://reader:***@127.0.0.1:1/x"
    assert DB_PASSWORD not in caplog.text


def test_db_upgrade_creates_the_store_and_is_safe_to_run_again(home: Path) -> None:
    """Given an empty home,
    when ``prodinf db upgrade`` runs twice,
    then both runs succeed and the store holds prodinf's tables at a revision."""
    store = home / "prodinf.sqlite"
    assert not store.exists()

    first = succeeded(prodinf("db", "upgrade"))
    second = succeeded(prodinf("db", "upgrade"))

    for out in (first, second):
        assert f"job store at sqlite:///{store} is at revision head" in out
    engine = create_engine(f"sqlite:///{store}")
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            revisions = conn.execute(text("SELECT version_num FROM prodinf_alembic_version"))
            assert len(revisions.all()) == 1
    finally:
        engine.dispose()
    assert {"prodinf_jobs", "prodinf_steps", "prodinf_history"} <= tables


def test_db_upgrade_to_an_unknown_revision_names_the_option() -> None:
    """When ``prodinf db upgrade --revision`` names no revision,
    then it exits non-zero naming --revision, without a traceback."""
    assert_clean_failure(prodinf("db", "upgrade", "--revision", "nope"), "nope", "--revision")


# -- kinds and bad input ---------------------------------------------------------------------


def test_kinds_lists_the_builtin_kinds_with_their_params() -> None:
    """When ``prodinf kinds`` runs, then each built-in kind is listed with its queue and
    params, required ones starred."""
    rows = {row[0]: row for row in table_rows(succeeded(prodinf("kinds")))}

    assert {"http_get", "wait_for_url", "email_when_complete"} <= set(rows)
    assert rows["http_get"][1] == "jobs"
    assert rows["http_get"][2] == "url*, timeout"
    assert rows["wait_for_url"][1] == "jobs"
    assert {"url*", "interval", "timeout"} <= set(rows["wait_for_url"][2].split(", "))
    assert rows["email_when_complete"][1] == "email"
    assert {"url*", "address*", "interval"} <= set(rows["email_when_complete"][2].split(", "))
    assert all(row[3] for row in rows.values()), "every kind has a description"


def test_a_plugin_that_cannot_be_imported_is_named_with_what_to_do() -> None:
    """Given PRODINF_PLUGINS naming a module that is not importable, when a command runs,
    then one line names the setting and the module and mentions PYTHONPATH."""
    result = prodinf("kinds", env={"PRODINF_PLUGINS": "myplug_nowhere"})
    assert_clean_failure(result, "PRODINF_PLUGINS", "'myplug_nowhere'", "PYTHONPATH")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["post", "nope"], ["unknown kind 'nope'.", "The kinds here:", "http_get"]),
        (["post", "http_gett"], ["did you mean 'http_get'?", "The kinds here:", "healthcheck"]),
        (["post", "http_get", "-p", "url=notaurl"], ["params.url", "URL"]),
        (["post", "http_get"], ["params.url", "required"]),
        (["post", "http_get", "-p", f"url={UNREACHABLE}", "-p", "timeout=soon"], ["timeout"]),
        (["post", "http_get", "-p", "foo"], ["--param 'foo' is not key=value"]),
        (["post", "http_get", "-p", "=x"], ["--param '=x' is not key=value"]),
        (["post", "http_get", "--json", "{bad"], ["--json", "not valid JSON"]),
        (["post", "http_get", "--json", "[1, 2]"], ["--json", "must be a JSON object"]),
        (["notify", UNREACHABLE, "not-an-address"], ["params.address", "not-an-address"]),
        (["notify", "notaurl", "ops@example.org"], ["params.url"]),
        (["show", "--status", "bogus"], ["--status", "bogus"]),
    ],
    ids=[
        "unknown-kind",
        "misspelt-kind",
        "bad-url",
        "missing-url",
        "bad-timeout",
        "not-key-value",
        "empty-key",
        "bad-json",
        "json-not-object",
        "notify-bad-address",
        "notify-bad-url",
        "show-bad-status",
    ],
)
def test_bad_input_is_named_and_stores_nothing(args: list[str], fragments: list[str]) -> None:
    """Given bad input on the command line,
    when the command runs,
    then it exits non-zero with a message naming the field (first, not as a trailing
    "(field)"), no traceback, and no job; the internal kinds are not offered."""
    result = prodinf(*args)
    assert_clean_failure(result, *fragments)
    assert not re.search(r"\([\w.-]+\)\s*$", result.output), result.output
    assert "job_notification" not in result.output

    assert show_json()["total"] == 0


def test_bad_input_in_a_real_process_is_one_line_on_stderr(home: Path, tmp_path: Path) -> None:
    """Given ``python -m prodinf.cli`` as a shell runs it,
    when a param is bad,
    then it exits 1 with one ``Error:`` line naming the field on stderr, nothing on stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODINF_")}
    env["PRODINF_HOME"] = str(home)

    done = subprocess.run(
        [sys.executable, "-m", "prodinf.cli", "post", "http_get", "-p", "url=notaurl"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1, done
    assert done.stdout == ""
    assert done.stderr.startswith("Error: params.url: "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


# -- following jobs --------------------------------------------------------------------------


def test_post_stores_a_queued_job_that_show_lists_and_details() -> None:
    """Given no worker running,
    when an http_get job is posted without --wait,
    then it is stored as queued, and ``show`` lists it, details its step and history,
    and prints the same as JSON."""
    job_id = post_queued()

    listed = table_rows(succeeded(prodinf("show")))
    detail = succeeded(prodinf("show", job_id))
    summary = show_json()
    full = show_json(job_id)

    assert [row[:3] for row in listed] == [[job_id, "http_get", "queued"]]
    assert f"http_get job {job_id}: queued" in detail
    rows = table_rows(detail)
    assert ["fetch", "pending", "0", ""] in rows  # the steps table
    assert any(row[1] == "job.submitted" for row in rows)  # the history table
    assert summary["total"] == 1
    assert [(j["id"], j["status"]) for j in summary["items"]] == [(job_id, "queued")]
    assert full["params"]["url"] == UNREACHABLE
    assert [s["name"] for s in full["steps"]] == ["fetch"]
    assert [h["event"] for h in full["history"]] == ["job.submitted"]


def test_post_with_notify_reports_the_end_and_names_a_bad_address() -> None:
    """When a job is posted with --notify-email and --webhook, then they are stored as its
    notify, and cancelling it queues the notification job; a bad address is refused
    naming the field."""
    job_id = post_queued(
        "--notify-email",
        "ada@example.org",
        "--notify-email",
        "bob@example.org",
        "--webhook",
        "https://hooks.example.org/prodinf",
    )
    assert show_json(job_id)["notify"] == {
        "email": ["ada@example.org", "bob@example.org"],
        "webhook": "https://hooks.example.org/prodinf",
    }
    succeeded(prodinf("cancel", job_id))
    notes = show_json("--kind", "job_notification")["items"]
    assert len(notes) == 1 and notes[0]["status"] == "queued"

    bad = prodinf("post", "http_get", "-p", f"url={UNREACHABLE}", "--notify-email", "nobody")
    assert_clean_failure(bad, "notify.email.0")


def test_show_filters_by_kind_and_status() -> None:
    """Given a queued job and a cancelled one,
    when ``show`` filters by status or kind,
    then only the matching jobs are listed."""
    queued, cancelled = post_queued(), post_queued()
    succeeded(prodinf("cancel", cancelled))

    by_status = show_json("--status", "cancelled")
    by_kind = show_json("--kind", "wait_for_url")

    assert [j["id"] for j in by_status["items"]] == [cancelled]
    assert by_kind == {"items": [], "total": 0}
    assert {j["id"] for j in show_json("--kind", "http_get")["items"]} == {queued, cancelled}


def test_the_same_idempotency_key_returns_the_existing_job() -> None:
    """When a job is posted twice with one idempotency key, then the second post
    reports the first job, and only one is stored."""
    first = post_queued("--idempotency-key", "nightly-2024-06-01")
    again = prodinf(
        "post",
        "http_get",
        "-p",
        f"url={UNREACHABLE}",
        "--idempotency-key",
        "nightly-2024-06-01",
    )

    assert succeeded(again).strip() == f"existing http_get job {first}"
    assert show_json()["total"] == 1


def test_show_an_unknown_job_says_so() -> None:
    """When ``show`` (or cancel, or retry) is given an id no job has,
    then it exits non-zero saying there is no such job, without a traceback."""
    for command in ("show", "cancel", "retry"):
        result = prodinf(command, "no-such-job")
        assert_clean_failure(result, "no job 'no-such-job': give its id, or at least 6")
        assert "(id)" not in result.output


def test_a_unique_start_of_an_id_names_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given two jobs whose ids share their first 6 characters,
    when ``show`` or ``cancel`` is given the 8 that tables show, then it acts on that job;
    given the 6 they share, it names both and asks for more; given 5, it says 6 at least."""
    ids = iter(uuid.UUID(f"abcdef0{n}-0000-4000-8000-00000000000{n}") for n in (1, 2))
    monkeypatch.setattr(newjob, "uuid", SimpleNamespace(uuid4=lambda: next(ids)))
    first, second = post_queued(), post_queued()

    assert f"http_get job {first}: queued" in succeeded(prodinf("show", first[:8]))
    assert succeeded(prodinf("cancel", second[:8])).strip() == f"job {second}: cancelled"
    assert_clean_failure(prodinf("show", "abcdef"), "several jobs' ids start with", first, second)
    assert_clean_failure(prodinf("retry", "abcde"), "at least 6")


def test_cancel_then_retry() -> None:
    """Given a queued job,
    when it is retried, then that is refused as a conflict naming its status;
    when it is cancelled, then it is cancelled, and cancelling again is refused;
    when the cancelled job is retried, then it is queued again, its history telling all."""
    job_id = post_queued()

    assert_clean_failure(
        prodinf("retry", job_id),
        f"job {job_id} is queued",
        "only a failed, reverted or cancelled job can be retried",
    )
    assert succeeded(prodinf("cancel", job_id)).strip() == f"job {job_id}: cancelled"
    assert show_json(job_id)["status"] == "cancelled"
    assert_clean_failure(prodinf("cancel", job_id), job_id, "cancelled")
    assert succeeded(prodinf("retry", job_id)).strip() == f"job {job_id}: queued"

    detail = show_json(job_id)
    assert detail["status"] == "queued"
    assert [h["event"] for h in detail["history"]] == [
        "job.submitted",
        "job.cancelled",
        "job.retried",
    ]


def test_post_wait_gives_up_after_its_timeout() -> None:
    """Given no worker running,
    when a job is posted with ``--wait --timeout 1``,
    then the progress bar follows it, and after a second the command exits non-zero
    saying the job is still queued; the job stays stored."""
    result = prodinf("post", "http_get", "-p", f"url={UNREACHABLE}", "--wait", "--timeout", "1")

    assert_clean_failure(result, "still queued after 1s")
    job_id = re.search(r"submitted http_get job (\S+)", result.output)
    assert job_id, result.output
    assert show_json(job_id.group(1))["status"] == "queued"


def test_notify_stores_a_queued_notification() -> None:
    """When ``notify URL ADDRESS`` runs, then an email_when_complete job is stored
    with that URL and address, and the command says who will be mailed."""
    out = succeeded(prodinf("notify", UNREACHABLE, "ops@example.org", "--interval", "5"))

    match = re.match(r"notification (\S+): ops@example.org will be mailed when", out)
    assert match, out
    detail = show_json(match.group(1))
    assert detail["kind"] == "email_when_complete"
    assert detail["status"] == "queued"
    assert detail["params"]["address"] == "ops@example.org"
    assert detail["params"]["url"] == UNREACHABLE
    assert detail["params"]["interval"] == 5


def test_show_prints_bracketed_text_as_it_is(home: Path) -> None:
    """Given a job whose result and error hold bracketed text (a mail subject such as
    "[prodinf] ..."), when ``show`` prints it, then the brackets are shown, not taken as
    terminal markup."""
    job_id = post_queued()
    store = JobStore(Settings(home=home).store_url)
    try:
        with store.transaction() as conn:
            conn.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id)
                .values(
                    result={"subject": "[prodinf] job 1 [bold]succeeded"},
                    error={"type": "X", "message": "[red]not red[/] [prodinf] mail"},
                )
            )
    finally:
        store.dispose()
    out = succeeded(prodinf("show", job_id))
    assert "[prodinf] job 1 [bold]succeeded" in out
    assert "[red]not red[/] [prodinf] mail" in out


@pytest.mark.parametrize("command", ["up", "portal"])
def test_a_port_in_use_is_named_with_what_to_do(command: str) -> None:
    """Given a port another process listens on, when ``prodinf up`` (or ``portal``) is
    started on it, then one line says so and names --port, before anything starts."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = prodinf(command, "--host", "127.0.0.1", "--port", port)
    assert_clean_failure(result, f"cannot listen on 127.0.0.1:{port}", "--port N")


def test_a_list_param_takes_commas(tmp_path: Path) -> None:
    """When a list param is given as ``-p groups=generic,meta``, then the job gets the
    list (a JSON list works too)."""
    db = f"sqlite:///{tmp_path / 'x.sqlite'}"
    out = succeeded(prodinf("post", "healthcheck", "-p", f"database_uri={db}",
                            "-p", "groups=generic, meta"))  # fmt: skip
    job_id = out.split()[-1]
    assert show_json(job_id)["params"]["groups"] == ["generic", "meta"]
    out = succeeded(prodinf("post", "healthcheck", "-p", f"database_uri={db}",
                            "-p", 'groups=["meta"]'))  # fmt: skip
    assert show_json(out.split()[-1])["params"]["groups"] == ["meta"]


def test_a_narrow_terminal_shows_ids_that_still_name_the_job() -> None:
    """Given an 80-column terminal, when ``show`` lists jobs, then each id is shown as
    its first 8 characters, whole, and those name the job in ``show``."""
    job_id = post_queued()
    listed = succeeded(prodinf("show", env={"COLUMNS": "80"}))
    assert job_id[:8] in listed and job_id not in listed
    assert f"http_get job {job_id}" in succeeded(prodinf("show", job_id[:8]))


def test_show_prints_a_healthchecks_report(home: Path, tmp_path: Path) -> None:
    """Given a healthcheck that found a missing meta key, when ``show`` prints it, then
    its report is there: the failed check, what it found, and its counts."""
    uri = f"sqlite:///{tmp_path / 'homo_sapiens_core_115_38'}.sqlite"
    build_core_like(uri, genes=5, release=115)
    engine = create_engine(uri)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM meta WHERE meta_key = 'assembly.name'"))
    engine.dispose()
    succeeded(prodinf("db", "upgrade"))
    settings = Settings(home=home)
    rt = Runtime(settings, create_celery(settings))
    try:
        job, _ = rt.jobs.submit("healthcheck", {"database_uri": uri, "groups": ["meta"]})
        rt.runner.drive(job["id"])
    finally:
        rt.close()
    out = succeeded(prodinf("show", job["id"]))
    assert "FAILED  meta_keys (meta)" in out and "assembly.name" in out
    assert "Checks:   0 passed, 1 failed" in out
