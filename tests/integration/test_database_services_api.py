"""``healthcheck`` and ``register_metadata`` as remote job services, over real HTTP.

Given a portal process and a worker process on RabbitMQ + PostgreSQL (as a staging
prodinf runs them), and a core-like MariaDB database reached with a password; when
this test process, a client on loopback, submits each kind with ``POST /api/v1/jobs``
and follows it with ``GET /api/v1/jobs/<id>``; then each ends as it should, bad
input is a 400 naming the field before anything is stored or sent, and no answer,
page or process log shows the password.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from prodinf.config import Settings
from prodinf.databases.uri import DatabaseURI
from prodinf.store import JobStore
from tests.conftest import Processes
from tests.integration.conftest import delete_queues, messages_waiting, stack_settings
from tests.integration.core_faults import PASSWORD, core_named, plant_faults
from tests.integration.datasets import Datasets
from tests.integration.remote_api import Portal, portal, submit
from tests.waiting import follow_over_http

pytestmark = pytest.mark.integration

__all__ = ["portal"]  # the fixture: a portal process and a worker


@pytest.fixture
def servers(request: pytest.FixtureRequest, home: Path, tmp_path: Path) -> Iterator[Settings]:
    """RabbitMQ + PostgreSQL, and no subscription: the events register_metadata records
    start nothing here (tests/integration/test_event_sources.py runs those)."""
    nobody = tmp_path / "subscriptions.yaml"
    nobody.write_text("subscriptions: []\n")
    settings = stack_settings(home, "servers", request, subscriptions=nobody)
    yield settings
    delete_queues(settings)


BAD_INPUT = [
    ("healthcheck", {"database_uri": "mysql://h/x", "groups": ["nope"]}, "params.groups"),
    ("healthcheck", {"database_uri": "mysql://h/x", "names": ["nope"]}, "params.names"),
    ("healthcheck", {"database_uri": "oracle://u:p@h/x"}, "params.database_uri"),
    ("healthcheck", {}, "params.database_uri"),
    ("register_metadata", {"database_uri": "nothing"}, "params.database_uri"),
    (
        "register_metadata",
        {"database_uri": "mysql://h/homo_sapiens_core_115_38", "release": -1},
        "params.release",
    ),
]  # fmt: skip


def jobs_stored(settings: Settings) -> int:
    store = JobStore(settings.store_url)
    try:
        return store.list_jobs()[1]
    finally:
        store.dispose()


def test_both_kinds_are_remote_job_services(
    portal: Portal,
    servers: Settings,
    datasets: Datasets,
    mariadb_user: str,
    processes: Processes,
) -> None:
    # Given a core-like MariaDB database reached with a password
    uri, _ = core_named(datasets, "mysql")
    url = DatabaseURI.parse(uri).url.set(username=mariadb_user, password=PASSWORD)
    secret_uri = url.render_as_string(hide_password=False)

    def run(kind: str) -> dict[str, Any]:
        job_id = submit(portal.base, kind, {"database_uri": secret_uri}, PASSWORD)
        return follow_over_http(portal.base, job_id, logs=processes.logs, secret=PASSWORD)

    # When its healthchecks are submitted and followed over HTTP, then they pass
    checked = run("healthcheck")
    assert checked["status"] == "succeeded", (checked["error"], processes.logs())
    assert checked["result"]["passed"] is True
    assert checked["result"]["summary"]["failed"] == 0

    # When it is registered, then the registration says the dataset is new
    registered = run("register_metadata")
    assert registered["status"] == "succeeded", (registered["error"], processes.logs())
    assert [e["type"] for e in registered["result"]["events"]] == ["dataset.created"]
    assert f"{mariadb_user}:***@" in registered["result"]["database"]

    # When the data goes bad, then a healthcheck job fails with the report as details
    plant_faults(uri)
    failed = run("healthcheck")
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "HealthchecksFailed"
    failing = {c["name"] for c in failed["error"]["details"]["checks"] if not c["passed"]}
    assert failing == {"foreign_keys", "core_tables_not_empty", "meta_keys"}

    # When bad input is posted with no worker consuming the queues (so a message sent
    # would stay there to be counted)
    processes.stop(portal.worker)
    stored = jobs_stored(servers)
    assert stored == 4  # and the job of the dataset.created event (nobody subscribes)
    assert set(messages_waiting(servers).values()) == {0}
    for kind, params, field in BAD_INPUT:
        answer = requests.post(
            f"{portal.base}/api/v1/jobs", json={"kind": kind, "params": params}, timeout=30
        )
        # Then each is a 400 naming the field, without a traceback
        assert answer.status_code == 400, answer.text
        assert answer.json()["field"] == field, answer.text
        assert "Traceback" not in answer.text
    # and nothing was stored or sent: no job row, no message in any queue
    assert jobs_stored(servers) == stored
    assert set(messages_waiting(servers).values()) == {0}

    # And neither the job pages nor the worker's and portal's logs show the password
    for job in (checked, registered, failed):
        page = requests.get(f"{portal.base}/jobs/{job['id']}", timeout=10)
        assert page.status_code == 200
        assert PASSWORD not in page.text
    assert processes.logs_holding(PASSWORD) == []
