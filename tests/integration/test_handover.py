"""A database handed over on RabbitMQ + PostgreSQL with real workers, from the machine's
MariaDB to a second MariaDB started for staging (and once PostgreSQL to PostgreSQL),
mail received by aiosmtpd: every stage, every check refused with a real database, the
duplicate race, a healthcheck failure, a metadata failure reverted then restarted, a
stop during the copy, and no password anywhere."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import NullPool, select, text

from prodinf.databases.checksum import table_stats
from prodinf.databases.uri import DatabaseURI
from prodinf.store.events import list_events
from prodinf.store.models import JOBS
from tests.conftest import Processes
from tests.integration.core_faults import PASSWORD, core_named, execute
from tests.integration.datasets import Datasets
from tests.integration.handover_stack import (
    ALL,
    PUBLIC,
    HandoverStack,
    handover_config,
    staging_server,
    start_stack,
)
from tests.integration.servers import Smtp
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def staging() -> Iterator[str]:
    yield from staging_server("mariadb")


@pytest.fixture
def config(tmp_path: Path, staging: str) -> Path:
    return handover_config(tmp_path, staging)


@pytest.fixture
def stack(
    request: pytest.FixtureRequest, home: Path, processes: Processes, config: Path, smtp: Smtp
) -> Iterator[HandoverStack]:
    yield from start_stack(request, home, processes, config, smtp)


def staged(staging: str, database: str) -> DatabaseURI:
    return DatabaseURI.parse(f"{staging}/{database}")


def same_data(a: DatabaseURI, b: DatabaseURI) -> bool:
    engines = [u.create_engine(poolclass=NullPool) for u in (a, b)]
    try:
        left, right = (table_stats(e, portable=True) for e in engines)
    finally:
        for engine in engines:
            engine.dispose()
    return {t: s.to_dict() for t, s in left.items()} == {t: s.to_dict() for t, s in right.items()}


def children(stack: HandoverStack, token: str) -> list[Any]:
    with stack.rt.store.transaction() as conn:
        return list(
            conn.execute(
                select(JOBS.c.parent_step, JOBS.c.kind, JOBS.c.status).where(
                    JOBS.c.parent_id == token
                )
            ).all()
        )


def test_a_good_core_database_is_checked_copied_registered_and_its_events_dispatched(
    stack: HandoverStack, datasets: Datasets, staging: str
) -> None:
    # Given a good core database on the production server
    src, _ = core_named(datasets, "mysql", genes=300)
    database = DatabaseURI.parse(src).database
    # When it is handed over
    answer = stack.submit(src)
    assert answer.status_code == 201, answer.json
    token = answer.json["token"]
    assert answer.json["url"].endswith(f"/api/v1/handovers/{token}")
    done = stack.wait(token)
    # Then every stage succeeded, each with its job
    assert done["status"] == "succeeded", done["error"]
    assert [(s["name"], s["status"]) for s in done["stages"]] == [
        ("healthcheck", "succeeded"), ("copy", "succeeded"),
        ("metadata", "succeeded"), ("events", "succeeded"),
    ]  # fmt: skip
    kinds = sorted((c.parent_step, c.kind, c.status) for c in children(stack, token))
    assert kinds == [
        ("copy", "copy_database", "succeeded"),
        ("healthcheck", "healthcheck", "succeeded"),
        ("metadata", "register_metadata", "succeeded"),
    ]
    # the staging copy equals the source
    try:
        assert same_data(DatabaseURI.parse(src), staged(staging, database))
        # its registration and events exist
        metadata = stack.rt.store.describe(done["stages"][2]["job"]["id"])["result"]
        assert metadata["registration_id"] and metadata["release"] == 115
        events, total = list_events(stack.rt.store, dataset=database)
        assert total >= 1 and {e["id"] for e in events} == {e["event_id"] for e in done["events"]}
        # and one mail told the contact it succeeded, linking the handover
        (mail,) = stack.mails(1)
        assert mail["To"] == "ada@example.org"
        assert database in mail["Subject"] and "succeeded" in mail["Subject"]
        assert f"{PUBLIC}/handovers/{token}" in mail.get_body(("plain",)).get_content()
    finally:
        staged(staging, database).drop()


def test_a_handover_of_a_postgresql_database_to_postgresql(
    request: pytest.FixtureRequest,
    home: Path,
    processes: Processes,
    tmp_path: Path,
    datasets: Datasets,
) -> None:
    server = staging_server("postgresql")
    pg_staging = next(server)
    try:
        config = handover_config(tmp_path, pg_staging)
        for stack in start_stack(request, home, processes, config, None):
            src, _ = core_named(datasets, "postgresql", genes=200)
            answer = stack.submit(src)
            assert answer.status_code == 201, answer.json
            done = stack.wait(answer.json["token"])
            assert done["status"] == "succeeded", done["error"]
            target = staged(pg_staging, DatabaseURI.parse(src).database)
            assert same_data(DatabaseURI.parse(src), target)
    finally:
        server.close()


def refusal(stack: HandoverStack, src: str, **extra: Any) -> tuple[int, str, str]:
    answer = stack.client.post(
        "/api/v1/handovers",
        json={"src_uri": src, "contact": "ada@example.org", "comment": "c", **extra},
    )
    body = answer.json
    return answer.status_code, body["field"], body["message"]


def test_each_check_refuses_a_real_database_naming_the_field(
    request: pytest.FixtureRequest,
    home: Path,
    processes: Processes,
    tmp_path: Path,
    staging: str,
    datasets: Datasets,
) -> None:
    closed = {"window": {"closes": "2026-02-01T00:00:00Z"}, "stages": {"copy": {}}}
    config = handover_config(tmp_path, staging, extra_types={"otherfeatures": closed})
    for stack in start_stack(request, home, processes, config, None, queues=()):
        good, _ = core_named(datasets, "mysql", genes=20)
        server = good.rpartition("/")[0]
        # a database that does not exist
        code, field, said = refusal(stack, f"{server}/nobody_core_115_38")
        assert (code, field) == (400, "src_uri") and "no database nobody_core_115_38" in said
        # a name no naming rule reads
        code, field, said = refusal(stack, f"{server}/mysql")
        assert (code, field) == (400, "src_uri") and "matches no naming rule" in said
        # a type whose window closed
        other = good.replace("_core_", "_otherfeatures_")
        code, field, said = refusal(stack, other)
        assert (code, field) == (400, "src_uri")
        assert said == (
            "otherfeatures databases are not accepted now: the window closed on "
            "2026-02-01T00:00:00+00:00"
        )
        # a release the database does not declare
        execute(good, "UPDATE meta SET meta_value = '114' WHERE meta_key = 'schema_version'")
        code, field, said = refusal(stack, good)
        assert (code, field) == (400, "src_uri") and "declares release '114'" in said
        execute(good, "UPDATE meta SET meta_value = '115' WHERE meta_key = 'schema_version'")
        # a release that is not the current one
        old, _ = core_named(datasets, "mysql", genes=20, release=114)
        code, field, said = refusal(stack, old)
        assert (code, field) == (400, "src_uri") and "current release is 115" in said
        # the staging server as the source
        database = DatabaseURI.parse(good).database
        copy = staged(staging, database)
        copy.create()
        try:
            as_source = copy.secret().replace("127.0.0.1", "localhost")
            code, field, said = refusal(stack, as_source)
            assert (code, field) == (400, "src_uri") and "is the source database" in said
        finally:
            copy.drop()
        # a bad contact
        code, field, said = refusal(stack, good, contact="ada at example")
        assert (code, field) == (400, "contact") and "not an email address" in said
        # and nothing was handed over
        assert stack.client.get("/api/v1/handovers").json["total"] == 0


def test_fifty_simultaneous_submissions_make_one_handover(
    stack: HandoverStack, datasets: Datasets, staging: str
) -> None:
    src, _ = core_named(datasets, "mysql", genes=50)
    answers: list[Any] = []
    start = threading.Barrier(50)

    def submit() -> None:
        client = stack.app.test_client()
        start.wait()
        answer = client.post(
            "/api/v1/handovers",
            json={"src_uri": src, "contact": "ada@example.org", "comment": "race"},
        )
        answers.append((answer.status_code, answer.json))

    threads = [threading.Thread(target=submit) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(code for code, _ in answers)
    assert codes == [201] + [409] * 49, [b for c, b in answers if c not in (201, 409)][:3]
    (token,) = [body["token"] for code, body in answers if code == 201]
    assert {body["details"]["token"] for code, body in answers if code == 409} == {token}
    stack.wait(token)
    staged(staging, DatabaseURI.parse(src).database).drop()
    # a finished handover does not block: handing it over again is normal
    again = stack.submit(src)
    assert again.status_code == 201 and again.json["token"] != token
    stack.wait(again.json["token"])
    listed = stack.client.get(
        "/api/v1/handovers", query_string={"database": DatabaseURI.parse(src).database}
    ).json
    assert listed["total"] == 2
    staged(staging, DatabaseURI.parse(src).database).drop()


def test_a_failed_healthcheck_stops_the_handover_before_the_copy(
    stack: HandoverStack, datasets: Datasets, staging: str
) -> None:
    # Given a database with orphan rows and an empty table
    src, _ = core_named(datasets, "mysql", genes=100)
    execute(
        src,
        "UPDATE object_xref SET xref_id = object_xref_id + 50000000 WHERE object_xref_id <= 7",
        "DELETE FROM translation",
        unchecked=True,
    )
    config = stack.rt.settings.handover_config
    assert config is not None
    every = {"params": {"groups": ["generic", "meta", "core"]}}
    handover_config(config.parent, staging, stages={**ALL, "healthcheck": every})
    token = stack.submit(src).json["token"]
    done = stack.wait(token)
    # Then it failed at healthcheck, and nothing was copied
    assert done["status"] == "failed" and done["stage"] == "healthcheck"
    assert [s["status"] for s in done["stages"]] == ["failed", "pending", "pending", "pending"]
    assert not staged(staging, DatabaseURI.parse(src).database).exists()
    # and the one mail lists the failed checks with their counts
    (mail,) = stack.mails(1)
    assert "failed" in mail["Subject"] and "healthcheck" in mail["Subject"]
    body = mail.get_body(("plain",)).get_content()
    failed = [c for c in done["error"]["details"]["error"]["details"]["checks"] if not c["passed"]]
    assert failed
    for check in failed:
        assert check["name"] in body


def test_a_metadata_failure_drops_the_copy_and_a_restart_after_the_fix_succeeds(
    request: pytest.FixtureRequest,
    home: Path,
    processes: Processes,
    config: Path,
    smtp: Smtp,
    datasets: Datasets,
    staging: str,
    tmp_path: Path,
) -> None:
    # Given a jobs worker whose naming rules do not read core names (a bad deployment)
    rules = tmp_path / "naming.yaml"
    rules.write_text(
        "rules:\n  - name: other\n    pattern: '^(?P<dataset>zz[a-z]*)_(?P<type>x)_"
        "(?P<release>\\d+)$'\n"
    )
    for stack in start_stack(
        request, home, processes, config, smtp, queues=("handover", "event", "email")
    ):
        broken = stack.rt.settings.model_copy(update={"naming_rules": rules})
        worker = stack.processes.worker(broken, queues=broken.queue_jobs, name="broken")
        src, _ = core_named(datasets, "mysql", genes=100)
        database = DatabaseURI.parse(src).database
        token = stack.submit(src).json["token"]
        done = stack.wait(token)
        # Then it failed at metadata, and the staging copy it made is gone
        assert done["status"] == "failed" and done["stage"] == "metadata", done["stages"]
        assert done["job_status"] == "reverted"
        copy = next(s for s in done["stages"] if s["name"] == "copy")
        assert copy["reverted"] and copy["status"] == "reverted"
        assert not staged(staging, database).exists()
        assert any(h["event"] == "step.reverted" and h["step"] == "copy" for h in done["history"])
        # When the worker is fixed and the handover restarted from metadata
        stack.processes.stop(worker)
        stack.worker("jobs")
        answer = stack.client.post(f"/api/v1/handovers/{token}/restart", json={"from": "metadata"})
        assert answer.status_code == 200, answer.json
        done = stack.wait(token)
        # Then it succeeded (the dropped copy made again first)
        assert done["status"] == "succeeded", done["error"]
        assert same_data(DatabaseURI.parse(src), staged(staging, database))
        staged(staging, database).drop()


def test_stop_during_the_copy_cancels_and_reverts_the_copy(
    stack: HandoverStack, datasets: Datasets, staging: str
) -> None:
    # Given a handover whose copy streams in the smallest batches (so it is stopped
    # mid-copy: it shows rows copied after 2 s, and must last longer than that)
    config = stack.rt.settings.handover_config
    assert config is not None
    slow = {"params": {"method": "stream", "batch_rows": 100}}
    handover_config(config.parent, staging, stages={**ALL, "copy": slow})
    src, _ = core_named(datasets, "mysql", genes=10000)
    database = DatabaseURI.parse(src).database
    token = stack.submit(src).json["token"]

    def copying() -> dict[str, Any] | None:
        copy = stack.handover(token)["stages"][1]
        if not copy["job"]:
            return None
        job = stack.rt.store.describe(copy["job"]["id"])
        return job if "copied" in (job["progress"]["message"] or "") else None

    job = wait_until(copying, 120, "the copy to be copying rows", 0.05)
    # When it is stopped
    answer = stack.client.post(f"/api/v1/handovers/{token}/stop")
    assert answer.status_code == 200 and answer.json["status"] == "stopped"
    # Then the copy job was cancelled mid-copy and reverted: the partial copy is gone
    wait_until(
        lambda: stack.rt.store.describe(job["id"])["status"] in ("failed", "reverted"),
        120,
        "the copy job to stop",
    )
    stopped = stack.rt.store.describe(job["id"])
    assert stopped["status"] == "reverted" and "cancelled" in stopped["error"]["message"]
    assert stack.handover(token)["status"] == "stopped"
    assert not staged(staging, database).exists()


def test_no_password_in_any_answer_page_mail_log_or_history(
    stack: HandoverStack, datasets: Datasets, staging: str, mariadb_user: str
) -> None:
    src, _ = core_named(datasets, "mysql", genes=50)
    url = DatabaseURI.parse(src).url.set(username=mariadb_user, password=PASSWORD)
    with_password = url.render_as_string(hide_password=False)
    answer = stack.submit(with_password)
    assert answer.status_code == 201, answer.json
    token = answer.json["token"]
    done = stack.wait(token)
    assert done["status"] == "succeeded", done["error"]
    seen = [
        str(answer.json),
        str(done),
        stack.client.get("/api/v1/handovers").get_data(as_text=True),
        stack.client.get(f"/handovers/{token}").get_data(as_text=True),
        stack.client.get("/handovers").get_data(as_text=True),
    ]
    for stage in done["stages"]:
        if stage["job"]:
            seen.append(stack.client.get(f"/api/v1/jobs/{stage['job']['id']}").get_data(True))
    seen.extend(m.as_string() for m in stack.mails(1))
    with stack.rt.store.transaction() as conn:
        seen.extend(str(r) for r in conn.execute(text("SELECT message, data FROM prodinf_history")))
    assert all(PASSWORD not in s for s in seen)
    assert stack.processes.logs_holding(PASSWORD) == []
    staged(staging, DatabaseURI.parse(src).database).drop()
