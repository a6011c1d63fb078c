"""A handover through faults and at scale, on RabbitMQ + PostgreSQL with real workers,
MariaDB to a second MariaDB: its worker SIGKILLed at every stage boundary, a bulk of 20
under a cap of 2 copies, and stages run by remote services (an HTTP job service on
loopback, and another prodinf) instead of this prodinf's kinds."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from prodinf.databases.uri import DatabaseURI
from prodinf.store.models import JOBS
from tests.conftest import Processes
from tests.integration.conftest import PLUGIN
from tests.integration.core_faults import core_named
from tests.integration.datasets import Datasets
from tests.integration.handover_stack import (
    ALL,
    HandoverStack,
    handover_config,
    staging_server,
    start_stack,
)
from tests.integration.test_remote_prodinf import Deployment, peer, peer_vhost
from tests.loopback import Loopback, Reply, Request

pytestmark = pytest.mark.integration

FAULTS = "tests.integration.handover_faults"
# the other prodinf of tests/integration/test_remote_prodinf.py, as a fixture here
__all__ = ["peer", "peer_vhost"]


@pytest.fixture(scope="module")
def staging() -> Iterator[str]:
    yield from staging_server("mariadb")


def stage_jobs(stack: HandoverStack, token: str) -> dict[str, int]:
    """How many jobs each stage of handover ``token`` started."""
    with stack.rt.store.transaction() as conn:
        rows = conn.execute(
            select(JOBS.c.parent_step, func.count())
            .where(JOBS.c.parent_id == token)
            .group_by(JOBS.c.parent_step)
        ).all()
    return {str(step): int(n) for step, n in rows}


def test_a_worker_killed_at_every_stage_boundary_still_finishes_each_stage_once(
    request: pytest.FixtureRequest,
    home: Path,
    processes: Processes,
    tmp_path: Path,
    staging: str,
    datasets: Datasets,
) -> None:
    # Given a handover worker that SIGKILLs itself at each stage boundary (once each)
    config = handover_config(tmp_path, staging)
    markers = tmp_path / "kills"
    markers.mkdir()
    for stack in start_stack(
        request, home, processes, config, None, queues=("jobs", "event"), resend_after=2.0
    ):
        faulty = stack.rt.settings.model_copy(update={"plugins": [PLUGIN, FAULTS]})
        stack.worker(
            "handover",
            settings=faulty,
            extra_env={"PRODINF_TEST_DIE_AT_BOUNDARY": str(markers)},
        )
        src, _ = core_named(datasets, "mysql", genes=200)
        # When a database is handed over
        token = stack.submit(src).json["token"]
        done = stack.wait(token, timeout=240)
        # Then the worker died at every boundary, and the handover still succeeded
        killed = sorted(p.name for p in markers.iterdir())
        assert {"healthcheck.ended", "copy.ended", "metadata.ended"} <= set(killed), killed
        assert {"sent-1", "sent-2", "sent-3"} <= set(killed), killed
        assert done["status"] == "succeeded", (done["error"], killed)
        # with each stage's job made exactly once
        assert stage_jobs(stack, token) == {"healthcheck": 1, "copy": 1, "metadata": 1}
        DatabaseURI.parse(f"{staging}/{DatabaseURI.parse(src).database}").drop()


def test_a_bulk_of_twenty_never_runs_more_than_two_copies_at_once(
    request: pytest.FixtureRequest,
    home: Path,
    processes: Processes,
    tmp_path: Path,
    staging: str,
    datasets: Datasets,
) -> None:
    # Given copies capped at 2 per staging server, and jobs workers that could run 4
    config = handover_config(tmp_path, staging, stages={"copy": {}})
    for stack in start_stack(
        request, home, processes, config, None, queues=("handover",), handover_max_copies=2
    ):
        stack.worker("jobs", concurrency=4)
        made = [core_named(datasets, "mysql", genes=300)[0] for _ in range(20)]
        names = [DatabaseURI.parse(uri).database for uri in made]
        server = made[0].rpartition("/")[0]
        # When the 20 are handed over in one bulk
        answer = stack.client.post(
            "/api/v1/handovers/bulk",
            json={"server_uri": server, "databases": names, "contact": "ada@example.org",
                  "comment": "release 115 cores"},
        )  # fmt: skip
        assert answer.status_code == 201, answer.json
        bulk = answer.json
        tokens = [a["token"] for a in bulk["answers"]]
        assert len(tokens) == 20, bulk["answers"]
        # Then all succeed
        for token in tokens:
            assert stack.wait(token, timeout=300)["status"] == "succeeded"
        # and the store's timestamps show never more than 2 copies at once
        with stack.rt.store.transaction() as conn:
            spans = conn.execute(
                select(JOBS.c.started_at, JOBS.c.finished_at).where(
                    JOBS.c.parent_id.in_(tokens), JOBS.c.kind == "copy_database"
                )
            ).all()
        assert len(spans) == 20
        assert max_overlap(spans) <= 2
        # the bulk's page lists each handover
        found = stack.client.get(f"/api/v1/handovers/bulk/{bulk['id']}").json
        assert sorted(h["token"] for h in found["handovers"]) == sorted(tokens)
        for name in names:
            DatabaseURI.parse(f"{staging}/{name}").drop()


def max_overlap(spans: list[Any]) -> int:
    """The most of ``(start, end)`` spans open at one instant."""
    moments: list[tuple[datetime, int]] = []
    for start, end in spans:
        moments += [(start, 1), (end, -1)]
    running = most = 0
    for _, step in sorted(moments, key=lambda m: (m[0], m[1])):  # ends before starts
        running += step
        most = max(most, running)
    return most


def with_remote_healthcheck(
    request: pytest.FixtureRequest,
    home: Path,
    processes: Processes,
    tmp_path: Path,
    staging: str,
    datasets: Datasets,
    services: str,
    healthcheck: dict[str, Any],
) -> Iterator[tuple[HandoverStack, str, dict[str, Any]]]:
    """A handover whose healthcheck stage runs on a service of ``services`` (a services
    file); yields the stack, the source and the handover, which succeeded by a
    ``remote_job`` naming the service."""
    path = tmp_path / "services.yaml"
    path.write_text(services)
    config = handover_config(tmp_path, staging, stages={**ALL, "healthcheck": healthcheck})
    for stack in start_stack(request, home, processes, config, None, services=path):
        src, _ = core_named(datasets, "mysql", genes=100)
        done = stack.wait(stack.submit(src).json["token"])
        assert done["status"] == "succeeded", done["error"]
        check = done["stages"][0]
        assert check["service"] == healthcheck["service"]
        assert check["job"]["kind"] == "remote_job"
        yield stack, src, done
        DatabaseURI.parse(f"{staging}/{DatabaseURI.parse(src).database}").drop()


class Checker:
    """An HTTP job service with its own words: each run is ``queued`` once, then
    ``done`` with a result."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.ids = itertools.count(1)
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Reply:
        if request.method == "POST" and request.path == "/runs":
            with self.lock:
                ref = f"c{next(self.ids)}"
                self.runs[ref] = {**request.json(), "looks": 0}
            return Reply(202, {"id": ref})
        ref = request.path.rpartition("/")[2]
        with self.lock:
            run = self.runs.get(ref)
            if run is None:
                return Reply(404, {"error": "no such run"})
            run["looks"] += 1
            if run["looks"] == 1:
                return Reply(200, {"state": "queued"})
        return Reply(200, {"state": "done", "output": {"checked": run["db"], "problems": 0}})


CHECKER = """
services:
  - name: checker
    type: http
    url: {url}
    submit: {{method: POST, path: /runs, body: {{db: "{{{{ params.database_uri }}}}"}}}}
    job_id: /id
    status_url: "/runs/{{{{ job_id }}}}"
    status: /state
    pending: [queued]
    succeeded: [done]
    failed: [broken]
    result: /output
    poll_interval: 0.2
    deadline: 60
"""


def test_a_stage_runs_on_an_http_job_service_instead_of_a_kind_here(
    request: pytest.FixtureRequest,
    home: Path,
    processes: Processes,
    tmp_path: Path,
    staging: str,
    datasets: Datasets,
) -> None:
    checker = Checker()
    with Loopback(checker) as server:
        setup = (request, home, processes, tmp_path, staging, datasets)
        spec = {"service": "checker"}
        for stack, src, done in with_remote_healthcheck(
            *setup, CHECKER.format(url=server.url()), spec
        ):
            (run,) = checker.runs.values()
            assert DatabaseURI.parse(run["db"]).database == DatabaseURI.parse(src).database
            assert stage_jobs(stack, done["token"])["healthcheck"] == 1


PEER = """
services:
  - {{name: peer, type: prodinf, url: '{url}', poll_interval: 0.3, deadline: 120}}
"""


def test_a_stage_runs_on_another_prodinf_instead_of_a_kind_here(
    request: pytest.FixtureRequest,
    home: Path,
    processes: Processes,
    tmp_path: Path,
    staging: str,
    datasets: Datasets,
    peer: Deployment,
) -> None:
    # Given the healthcheck stage set to run on another prodinf (its own store, broker,
    # portal over HTTP and worker)
    setup = (request, home, processes, tmp_path, staging, datasets)
    spec = {"service": "peer", "params": {"groups": ["generic"]}}
    for stack, src, done in with_remote_healthcheck(*setup, PEER.format(url=peer.url), spec):
        # Then its healthcheck ran there, as a healthcheck job
        remote = stack.rt.store.describe(done["stages"][0]["job"]["id"])["result"]
        there = peer.runtime.store.describe(remote["remote_id"])
        assert there["kind"] == "healthcheck" and there["status"] == "succeeded"
        assert there["result"]["database_name"] == DatabaseURI.parse(src).database
