"""``healthcheck`` on real SQLite, PostgreSQL and MariaDB core-like databases (~114,000 rows).

Given a generated core-like database; when the healthcheck kind runs on it (driven
in this process by the job runner, on an embedded store); then a good database
passes every check, and each planted problem (orphan rows, an empty table, a
missing meta key, a wrong schema version) is found, counted, shown by example and
reported. Unreachable servers and bad credentials fail clearly, and no password
appears anywhere a user can look.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from prodinf.celery_app import create_celery
from prodinf.databases.uri import DatabaseURI
from prodinf.runtime import Runtime
from prodinf.store import StepRow
from tests.conftest import Processes
from tests.integration.conftest import stack_settings
from tests.integration.core_faults import ORPHANS, PASSWORD, core_named, execute, plant_faults
from tests.integration.datasets import ENGINES, Datasets
from tests.waiting import wait_for_job, wait_until

pytestmark = pytest.mark.integration

PLUGIN = "tests.integration.plugin_checks"
FAULTS = "tests.integration.faults"
ALL_CHECKS = {
    "reachable",
    "core_tables_present",
    "core_tables_not_empty",
    "foreign_keys",
    "core_columns_set",
    "meta_keys",
    "genes_have_transcripts",  # the plugin's Python check
}


@pytest.fixture
def rt_plugins() -> list[str]:
    """``rt`` loads the plugin with the Python check."""
    return [PLUGIN]


def run(rt: Runtime, params: dict[str, Any]) -> dict[str, Any]:
    summary, _ = rt.jobs.submit("healthcheck", params)
    return wait_for_job(rt, summary["id"], drive=True, interval=0.3)


def by_name(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in checks}


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_good_database_passes_and_each_planted_problem_is_found(
    rt: Runtime, datasets: Datasets, engine_name: str
) -> None:
    # Given a good core-like database of about 114,000 rows
    uri, counts = core_named(datasets, engine_name)
    assert sum(counts.values()) >= 100_000

    # When every check runs on it, then the job succeeds with every check passed
    good = run(rt, {"database_uri": uri})
    assert good["status"] == "succeeded", good["error"]
    result = good["result"]
    assert result["passed"] is True
    assert set(by_name(result["checks"])) == ALL_CHECKS
    assert all(c["passed"] and c["count"] == 0 for c in result["checks"])
    assert result["summary"]["failed"] == 0
    assert result["dataset"]["type"] == "core" and result["dataset"]["release"] == 115
    assert result["report"]["text"].startswith("Healthchecks passed on ")

    # Given the same database with orphan rows, an empty table, a missing meta key
    # and a wrong schema version
    plant_faults(uri)

    # When the checks run again, then the job fails with the full result as details
    bad = run(rt, {"database_uri": uri})
    assert bad["status"] == "failed"
    error = bad["error"]
    assert error["type"] == "HealthchecksFailed"
    assert "Healthchecks FAILED" in error["message"]
    found = error["details"]
    assert found["passed"] is False
    checks = by_name(found["checks"])

    orphans = checks["foreign_keys"]
    assert not orphans["passed"]
    assert orphans["count"] == ORPHANS
    assert len(orphans["examples"]) == 10
    assert orphans["examples"][0] == {
        "relation": "object_xref.xref_id -> xref.xref_id",
        "object_xref_id": 1,
        "xref_id": 50000001,
    }
    assert "object_xref.xref_id -> xref.xref_id (12)" in orphans["message"]

    empty = checks["core_tables_not_empty"]
    assert (empty["passed"], empty["count"]) == (False, 1)
    assert empty["examples"] == [{"table": "translation", "problem": "empty"}]

    meta = checks["meta_keys"]
    assert (meta["passed"], meta["count"]) == (False, 2)
    assert {"meta_key": "assembly.name", "problem": "missing"} in meta["examples"]
    wrong = [e for e in meta["examples"] if e["meta_key"] == "schema_version"]
    assert wrong == [
        {
            "meta_id": 1,
            "meta_key": "schema_version",
            "meta_value": "114",
            "problem": "expected '115'",
        }
    ]

    # and what was not broken still passes
    for name in ("reachable", "core_tables_present", "core_columns_set", "genes_have_transcripts"):
        assert checks[name]["passed"], checks[name]
    assert found["summary"] == {**found["summary"], "run": 7, "failed": 3, "passed": 4}

    # and the report says it all in words a mail reader follows
    report = found["report"]["text"]
    assert report.startswith("Healthchecks FAILED on ")
    assert "FAILED  foreign_keys (generic): 12 orphan rows" in report
    assert "object_xref_id=1, xref_id=50000001" in report
    assert "... and 2 more" in report
    assert "FAILED  core_tables_not_empty (core): empty or missing: translation (empty)" in report
    assert "schema_version (expected '115')" in report
    assert "assembly.name (missing)" in report
    html = found["report"]["html"]
    assert 'id="check-foreign_keys"' in html and "50000001" in html


def test_groups_and_names_select_the_checks(rt: Runtime, datasets: Datasets) -> None:
    # Given a core-like database
    uri, _ = core_named(datasets, "sqlite", genes=50)

    # When the meta group alone is asked for, then only its check runs
    meta_only = run(rt, {"database_uri": uri, "groups": ["meta"]})
    assert [c["name"] for c in meta_only["result"]["checks"]] == ["meta_keys"]

    # When a group and a name are asked for, then the checks of both run
    mixed = run(rt, {"database_uri": uri, "groups": ["generic"], "names": ["meta_keys"]})
    assert [c["name"] for c in mixed["result"]["checks"]] == [
        "reachable",
        "foreign_keys",
        "meta_keys",
    ]


def test_checks_for_another_type_are_skipped_and_say_why(rt: Runtime, datasets: Datasets) -> None:
    # Given a core-like schema in a database named as a variation database
    uri, _ = core_named(datasets, "sqlite", genes=50)
    name = DatabaseURI.parse(uri).path
    variation = name.with_name(name.name.replace("_core_", "_variation_"))
    name.rename(variation)
    datasets.made.append(f"sqlite:///{variation}")

    # When it is checked
    done = run(rt, {"database_uri": f"sqlite:///{variation}"})

    # Then the generic checks run, and the core-only ones are skipped saying why
    assert done["status"] == "succeeded", done["error"]
    ran = {c["name"] for c in done["result"]["checks"]}
    assert ran == {"reachable", "foreign_keys"}
    skipped = {s["name"]: s["reason"] for s in done["result"]["skipped"]}
    assert skipped["meta_keys"] == "applies to core, otherfeatures, not variation"
    assert "Skipped:" in done["result"]["report"]["text"]


def test_a_server_that_does_not_answer_fails_after_retries_with_a_clear_error(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a URI with a password, on port 1 of loopback: nothing listens there, so
    # connecting is refused at once
    uri = f"mysql://root:{PASSWORD}@127.0.0.1:1/hcx_core_115_38"
    caplog.set_level(logging.DEBUG)

    # When it is checked
    done = run(rt, {"database_uri": uri})

    # Then it fails after retries, saying which server, and no password is shown or logged

    assert done["status"] == "failed"
    assert done["steps"][0]["attempts"] == 3  # retried: a server may come back
    message = done["error"]["message"]
    assert message.startswith("healthcheck of mysql+pymysql://root:***@127.0.0.1:1/")
    assert "server unavailable" in message
    assert PASSWORD not in json.dumps(done)
    assert PASSWORD not in caplog.text


def test_a_missing_sqlite_file_fails_at_once(rt: Runtime, tmp_path: Path) -> None:
    # Given a SQLite URI naming no file, when it is checked
    done = run(rt, {"database_uri": f"sqlite:///{tmp_path}/nothing_core_115_38.sqlite"})

    # Then it fails at once saying so, and looking did not create the file
    assert done["status"] == "failed"
    assert done["steps"][0]["attempts"] == 1
    assert "no such database file" in done["error"]["message"]
    assert not (tmp_path / "nothing_core_115_38.sqlite").exists()  # not created by looking


def test_bad_credentials_fail_at_once_and_say_so(
    rt: Runtime, datasets: Datasets, mariadb_user: str
) -> None:
    # Given a MariaDB database reached with a wrong password
    uri, _ = core_named(datasets, "mysql", genes=50)
    url = DatabaseURI.parse(uri).url.set(username=mariadb_user, password="Wrong-Pass-1234")

    # When it is checked
    done = run(rt, {"database_uri": url.render_as_string(hide_password=False)})

    # Then it fails at once, saying so with the user shown and the password not
    assert done["status"] == "failed"
    assert done["steps"][0]["attempts"] == 1  # no retry: these credentials never work
    assert "access denied or no such database" in done["error"]["message"]
    assert f"{mariadb_user}:***@" in done["error"]["message"]
    assert "Wrong-Pass-1234" not in json.dumps(done)


@pytest.mark.parametrize("engine_name", ["mysql", "postgresql"])
def test_no_password_appears_in_the_result_report_progress_or_history(
    rt: Runtime,
    datasets: Datasets,
    engine_name: str,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a database reached with a user and password, with a planted problem
    user = request.getfixturevalue("mariadb_user" if engine_name == "mysql" else "postgres_role")
    uri, _ = core_named(datasets, engine_name, genes=50)
    plant_faults(uri)
    if engine_name == "postgresql":  # the role reads the tables
        execute(uri, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {user}")
    url = DatabaseURI.parse(uri).url.set(username=user, password=PASSWORD)
    secret_uri = url.render_as_string(hide_password=False)

    # When the healthcheck runs and fails
    caplog.set_level(logging.DEBUG)
    done = run(rt, {"database_uri": secret_uri, "names": ["reachable", "foreign_keys"]})

    # Then the URI is shown everywhere with its password masked, and never logged
    assert done["status"] == "failed", done["error"]
    assert PASSWORD not in json.dumps(done)  # params, steps, result, error, history
    assert PASSWORD not in caplog.text
    assert f"{user}:***@" in done["error"]["details"]["database"]
    assert f"{user}:***@" in done["error"]["details"]["report"]["text"]
    assert f"{user}:***@" in done["params"]["database_uri"]


def recorded_checks(rt: Runtime, job_id: str) -> dict[str, Any]:
    """The findings the job's check step has recorded so far (``ctx.once``), by key."""
    with rt.store.session() as session:
        state = session.scalar(
            select(StepRow.state).where(StepRow.job_id == job_id, StepRow.name == "check")
        )
    effects: dict[str, Any] = (state or {}).get("effects", {})
    return {k: v for k, v in effects.items() if k.startswith("check:")}


def test_a_worker_killed_mid_run_hands_over_without_repeating_finished_checks(
    home: Path, datasets: Datasets, processes: Processes, request: pytest.FixtureRequest
) -> None:
    # Given a worker that stops dead right after recording the foreign_keys finding
    # (the fault plugin stalls it there, so the kill lands at that exact point)
    settings = stack_settings(home, "embedded", request, plugins=[PLUGIN, FAULTS])
    rt = Runtime(settings, create_celery(settings))
    try:
        uri, _ = core_named(datasets, "sqlite")
        doomed = processes.worker(
            settings,
            queues=settings.queue_jobs,
            concurrency=1,
            name="doomed",
            extra_env={"PRODINF_TEST_PAUSE_AFTER_ONCE": "check:foreign_keys"},
        )
        job, _ = rt.jobs.submit("healthcheck", {"database_uri": uri})
        wait_until(
            lambda: "check:foreign_keys" in recorded_checks(rt, job["id"]),
            60,
            "the foreign_keys finding to be recorded",
            logs=processes.logs,
        )
        before = recorded_checks(rt, job["id"])

        # When the worker is SIGKILLed there and another one starts
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
        processes.worker(settings, queues=settings.queue_jobs, name="rescuer")
        detail = wait_for_job(rt, job["id"], 120, logs=processes.logs)
    finally:
        rt.close()

    # Then the job succeeds with every check, and the findings recorded before the
    # kill are the ones reported (not run again: same timings to the millisecond)
    assert detail["status"] == "succeeded", (detail["error"], processes.logs())
    checks = by_name(detail["result"]["checks"])
    assert set(checks) == ALL_CHECKS
    for key, finding in before.items():
        assert checks[key.removeprefix("check:")] == finding
    assert "step.resumed" in [h["event"] for h in detail["history"]]
