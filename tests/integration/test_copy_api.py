"""``copy_database`` as a remote job service, over real HTTP, with credentials in the URIs.

Given a portal process and a worker process on RabbitMQ + PostgreSQL, and a
core-like MariaDB database reached by a user with a password; when this test
process, a client on loopback, submits copies with ``POST /api/v1/jobs`` and
follows them with ``GET /api/v1/jobs/<id>``; then a good copy succeeds verified,
a copy onto an existing target fails saying so, bad input is a 400 naming the
field, and the password appears in no answer, page or worker log.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import NullPool, text

from prodinf.databases.uri import DatabaseURI
from tests.conftest import Processes
from tests.gates import MYSQL_URL, require
from tests.integration.datasets import Datasets
from tests.integration.remote_api import Portal, portal, submit
from tests.waiting import follow_over_http

pytestmark = pytest.mark.integration

__all__ = ["portal"]  # the fixture: a portal process and a worker

PASSWORD = "Cp-Secret-5521"
USER = "prodinf_copy_a"


@pytest.fixture
def copy_user() -> Iterator[str]:
    """A MariaDB user with a password and every right on the tests' dataset databases."""
    require("MariaDB", MYSQL_URL)
    admin = DatabaseURI.parse(MYSQL_URL).server().create_engine(poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'"))
        conn.execute(text(f"GRANT ALL PRIVILEGES ON `prodinf\\_ds\\_%`.* TO '{USER}'@'%'"))
    yield USER
    with admin.begin() as conn:
        conn.execute(text(f"DROP USER IF EXISTS '{USER}'@'%'"))
    admin.dispose()


def with_user(uri: str) -> str:
    url = DatabaseURI.parse(uri).url.set(username=USER, password=PASSWORD)
    return url.render_as_string(hide_password=False)


def test_copy_database_is_a_remote_job_service_that_never_shows_the_password(
    portal: Portal, datasets: Datasets, copy_user: str, processes: Processes
) -> None:
    # Given a core-like MariaDB database and a target name, both reached with a password
    src, counts = datasets.build("mysql")
    src_secret, tgt_secret = with_user(src), with_user(datasets.uri("mysql"))
    params = {"src_uri": src_secret, "tgt_uri": tgt_secret}

    def copy() -> dict[str, Any]:
        job_id = submit(portal.base, "copy_database", params, PASSWORD)
        return follow_over_http(portal.base, job_id, 180, logs=processes.logs, secret=PASSWORD)

    # When a copy is submitted and followed over HTTP, then it succeeds, verified
    copied = copy()
    assert copied["status"] == "succeeded", (copied["error"], processes.logs())
    result = copied["result"]
    assert result["verified"] is True and result["rows"] == sum(counts.values())
    assert f"{USER}:***@" in result["source"] and f"{USER}:***@" in result["target"]
    assert {name: t["rows"] for name, t in result["tables"].items()} == counts

    # When the same copy is submitted again, then the existing target is refused, clearly
    again = copy()
    assert again["status"] == "failed"
    assert "already exists" in again["error"]["message"]
    assert "set overwrite" in again["error"]["message"]

    # And bad input is a 400 naming the field, without a traceback or the password
    bad = [
        ({"src_uri": "oracle://u:" + PASSWORD + "@h/x", "tgt_uri": tgt_secret}, "params.src_uri"),
        ({"src_uri": src_secret, "tgt_uri": "nothing"}, "params.tgt_uri"),
        ({"src_uri": src_secret}, "params.tgt_uri"),
        ({"src_uri": src_secret, "tgt_uri": src_secret}, "params.tgt_uri"),
        ({"src_uri": src_secret, "tgt_uri": tgt_secret, "batch_rows": 5}, "params.batch_rows"),
        ({"src_uri": src_secret, "tgt_uri": tgt_secret, "method": "fast"}, "params.method"),
    ]
    for bad_params, field in bad:
        answer = requests.post(
            f"{portal.base}/api/v1/jobs",
            json={"kind": "copy_database", "params": bad_params},
            timeout=30,
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["field"] == field, answer.text
        assert "Traceback" not in answer.text
        assert PASSWORD not in answer.text

    # And neither the job pages nor the worker's and portal's logs show the password
    for job in (copied, again):
        page = requests.get(f"{portal.base}/jobs/{job['id']}", timeout=10)
        assert page.status_code == 200
        assert PASSWORD not in page.text
    assert processes.logs_holding(PASSWORD) == []
