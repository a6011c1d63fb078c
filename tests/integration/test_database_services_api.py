"""``healthcheck`` and ``register_metadata`` as remote job services, over real HTTP.

Given a portal process and a worker process on RabbitMQ + PostgreSQL (as a staging
prodinf runs them), and a core-like MariaDB database reached with a password; when
this test process, a client on loopback, submits each kind with ``POST /api/v1/jobs``
and follows it with ``GET /api/v1/jobs/<id>``; then each ends as it should, bad
input is a 400 naming the field, and no answer or page shows the password.
"""

from __future__ import annotations

import pytest
import requests

from prodinf.databases.uri import DatabaseURI
from tests.conftest import Processes
from tests.integration.core_faults import PASSWORD, core_named, plant_faults
from tests.integration.datasets import Datasets
from tests.integration.remote_api import follow, portal, submit

pytestmark = pytest.mark.integration

__all__ = ["portal"]  # the fixture: a portal process and a worker


BAD_INPUT = [
    ("healthcheck", {"database_uri": "mysql://h/x", "groups": ["nope"]}, "params.groups"),
    ("healthcheck", {"database_uri": "mysql://h/x", "names": ["nope"]}, "params.names"),
    ("healthcheck", {"database_uri": "oracle://u:p@h/x"}, "params.database_uri"),
    ("healthcheck", {}, "params.database_uri"),
    ("register_metadata", {"database_uri": "nothing"}, "params.database_uri"),
    ("register_metadata", {"database_uri": "sqlite:///x.db", "release": -1}, "params.release"),
]  # fmt: skip


def test_both_kinds_are_remote_job_services(
    portal: str, datasets: Datasets, mariadb_user: str, processes: Processes
) -> None:
    # Given a core-like MariaDB database reached with a password
    uri, _ = core_named(datasets, "mysql")
    url = DatabaseURI.parse(uri).url.set(username=mariadb_user, password=PASSWORD)
    secret_uri = url.render_as_string(hide_password=False)

    # When its healthchecks are submitted and followed over HTTP, then they pass
    checked = follow(
        portal,
        submit(portal, "healthcheck", {"database_uri": secret_uri}, PASSWORD),
        processes,
        PASSWORD,
    )
    assert checked["status"] == "succeeded", (checked["error"], processes.logs())
    assert checked["result"]["passed"] is True
    assert checked["result"]["summary"]["failed"] == 0

    # When it is registered, then the registration says the dataset is new
    registered = follow(
        portal,
        submit(portal, "register_metadata", {"database_uri": secret_uri}, PASSWORD),
        processes,
        PASSWORD,
    )
    assert registered["status"] == "succeeded", (registered["error"], processes.logs())
    assert [e["type"] for e in registered["result"]["events"]] == ["dataset.created"]
    assert f"{mariadb_user}:***@" in registered["result"]["database"]

    # When the data goes bad, then a healthcheck job fails with the report as details
    plant_faults(uri)
    failed = follow(
        portal,
        submit(portal, "healthcheck", {"database_uri": secret_uri}, PASSWORD),
        processes,
        PASSWORD,
    )
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
