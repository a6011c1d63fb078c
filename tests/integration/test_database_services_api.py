"""``healthcheck`` and ``register_metadata`` as remote job services, over real HTTP.

Given a portal process and a worker process on RabbitMQ + PostgreSQL (as a staging
prodinf runs them), and a core-like MariaDB database reached with a password; when
this test process, a client on loopback, submits each kind with ``POST /api/v1/jobs``
and follows it with ``GET /api/v1/jobs/<id>``; then each ends as it should, bad
input is a 400 naming the field, and no answer or page shows the password.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from prodinf.config import Settings
from prodinf.databases.uri import DatabaseURI
from prodinf.store import TERMINAL
from tests.conftest import Processes, env_for, wait_until
from tests.integration.core_faults import PASSWORD, core_named, plant_faults
from tests.integration.datasets import Datasets
from tests.integration.servers import free_port

pytestmark = pytest.mark.integration


BAD_INPUT = [
    ("healthcheck", {"database_uri": "mysql://h/x", "groups": ["nope"]}, "params.groups"),
    ("healthcheck", {"database_uri": "mysql://h/x", "names": ["nope"]}, "params.names"),
    ("healthcheck", {"database_uri": "oracle://u:p@h/x"}, "params.database_uri"),
    ("healthcheck", {}, "params.database_uri"),
    ("register_metadata", {"database_uri": "nothing"}, "params.database_uri"),
    ("register_metadata", {"database_uri": "sqlite:///x.db", "release": -1}, "params.release"),
]  # fmt: skip


@pytest.fixture
def portal(servers: Settings, processes: Processes) -> Iterator[str]:
    """A portal process and a worker consuming the jobs queue; the portal's base URL."""
    port = free_port()
    processes.start(
        [sys.executable, "-m", "prodinf.cli", "portal", "--port", str(port)],
        env_for(servers),
        "portal",
    )
    processes.worker(servers, queues=servers.queue_jobs)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/health", timeout=3).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(up, 60, f"the portal to answer\n{processes.logs()}")
    yield base


def follow(base: str, job_id: str, processes: Processes, timeout: float = 200) -> dict[str, Any]:
    """GET the job until it ends, as a remote caller polls it."""
    deadline = time.monotonic() + timeout
    while True:
        answer = requests.get(f"{base}/api/v1/jobs/{job_id}", timeout=10)
        assert answer.status_code == 200, answer.text
        assert PASSWORD not in answer.text
        detail: dict[str, Any] = answer.json()
        if detail["status"] in TERMINAL:
            return detail
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {detail['status']}\n{processes.logs()}")
        time.sleep(0.5)


def submit(base: str, kind: str, params: dict[str, Any]) -> str:
    answer = requests.post(f"{base}/api/v1/jobs", json={"kind": kind, "params": params}, timeout=30)
    assert answer.status_code == 201, answer.text
    assert PASSWORD not in answer.text
    return str(answer.json()["id"])


def test_both_kinds_are_remote_job_services(
    portal: str, datasets: Datasets, mariadb_user: str, processes: Processes
) -> None:
    # Given a core-like MariaDB database reached with a password
    uri, _ = core_named(datasets, "mysql")
    url = DatabaseURI.parse(uri).url.set(username=mariadb_user, password=PASSWORD)
    secret_uri = url.render_as_string(hide_password=False)

    # When its healthchecks are submitted and followed over HTTP, then they pass
    checked = follow(portal, submit(portal, "healthcheck", {"database_uri": secret_uri}), processes)
    assert checked["status"] == "succeeded", (checked["error"], processes.logs())
    assert checked["result"]["passed"] is True
    assert checked["result"]["summary"]["failed"] == 0

    # When it is registered, then the registration says the dataset is new
    registered = follow(
        portal, submit(portal, "register_metadata", {"database_uri": secret_uri}), processes
    )
    assert registered["status"] == "succeeded", (registered["error"], processes.logs())
    assert [e["type"] for e in registered["result"]["events"]] == ["dataset.created"]
    assert f"{mariadb_user}:***@" in registered["result"]["database"]

    # When the data goes bad, then a healthcheck job fails with the report as details
    plant_faults(uri)
    failed = follow(portal, submit(portal, "healthcheck", {"database_uri": secret_uri}), processes)
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "HealthchecksFailed"
    failing = {c["name"] for c in failed["error"]["details"]["checks"] if not c["passed"]}
    assert failing == {"foreign_keys", "core_tables_not_empty", "meta_keys"}

    # And bad input is a 400 naming the field, before anything is stored
    for kind, params, field in BAD_INPUT:
        answer = requests.post(
            f"{portal}/api/v1/jobs", json={"kind": kind, "params": params}, timeout=30
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["field"] == field, answer.text
        assert "Traceback" not in answer.text

    # And the job pages show no password either
    for job in (checked, registered, failed):
        page = requests.get(f"{portal}/jobs/{job['id']}", timeout=10)
        assert page.status_code == 200
        assert PASSWORD not in page.text
