"""Two prodinf deployments, each with its own PostgreSQL database, RabbitMQ vhost,
portal (real HTTP on loopback) and workers: a subscription on the first (A) runs a kind
on the second (B) through a ``type: prodinf`` service. B's signed completion webhook
wakes A's waiting step at once; with callbacks blocked A still finishes by polling; a
forged callback is refused."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy.engine import make_url

from prodinf.config import Settings
from prodinf.kinds.event_record import record_event
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.webhooks import SIGNATURE_HEADER, encode, signature
from tests.conftest import Processes, fresh_store
from tests.gates import AMQP_URL
from tests.integration.browser import serve
from tests.integration.conftest import IT_DATABASE, PLUGIN, delete_queues, stack_settings
from tests.loopback import free_port
from tests.waiting import wait_for_job, wait_until

pytestmark = pytest.mark.integration

SECRET = "peer-webhook-secret-81c2"
VHOST = "prodinf_it_peer"

SUBSCRIPTIONS = """
subscriptions:
  - name: on-peer
    on: [peer.run]
    run:
      service: peer
      kind: it_effect
      params: {effect_file: "{{ payload.log }}", sleep: "{{ payload.sleep }}"}
"""


@dataclass
class Deployment:
    settings: Settings
    runtime: Runtime
    url: str


def _vhost(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def peer_vhost(amqp_url: str) -> Iterator[str]:
    """A RabbitMQ vhost of its own for B, made fresh and deleted afterwards."""
    with contextlib.suppress(subprocess.CalledProcessError):  # left by an earlier run
        _vhost("delete_vhost", VHOST)
    _vhost("add_vhost", VHOST)
    _vhost("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
    yield AMQP_URL.rstrip("/") + "/" + VHOST
    _vhost("delete_vhost", VHOST)


@pytest.fixture
def peer(
    tmp_path: Path, postgres_url: str, peer_vhost: str, processes: Processes
) -> Iterator[Deployment]:
    """B: its own database and vhost, a portal over HTTP, a worker for jobs and email."""
    database = make_url(postgres_url).set(database=f"{IT_DATABASE}_peer")
    url = database.render_as_string(hide_password=False)
    fresh_store(url).dispose()
    settings = Settings(
        home=tmp_path / "peer",
        database_url=url,
        broker_url=peer_vhost,
        plugins=[PLUGIN],
        webhook_secret=SECRET,
        reconcile_interval=0.3,
    )
    app = create_app(settings)
    served = serve(app, free_port())
    base = next(served)
    processes.worker(settings, queues=f"{settings.queue_jobs},{settings.queue_email}", name="peer")
    yield Deployment(settings, app.extensions["prodinf"], base)
    next(served, None)
    app.extensions["prodinf"].close()


def home_of(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    peer: Deployment,
    *,
    poll: float,
    public_url: str | None = None,
) -> Iterator[Deployment]:
    """A: the servers stack (PostgreSQL, RabbitMQ's default vhost), the peer as a
    service, its portal over HTTP at ``public_url``, an event worker."""
    (tmp_path / "services.yaml").write_text(
        "services:\n"
        f"  - {{name: peer, type: prodinf, url: '{peer.url}', secret_env: PEER_SECRET,"
        f" poll_interval: {poll}, deadline: 300}}\n"
    )
    (tmp_path / "subscriptions.yaml").write_text(SUBSCRIPTIONS)
    port = free_port()
    settings = stack_settings(
        tmp_path / "home",
        "servers",
        request,
        services=tmp_path / "services.yaml",
        subscriptions=tmp_path / "subscriptions.yaml",
        public_url=public_url or f"http://127.0.0.1:{port}",
    )
    app = create_app(settings)
    served = serve(app, port)
    base = next(served)
    processes: Processes = request.getfixturevalue("processes")
    processes.worker(settings, queues=settings.queue_event, module="prodinf.event_tasks")
    yield Deployment(settings, app.extensions["prodinf"], base)
    next(served, None)
    app.extensions["prodinf"].close()
    delete_queues(settings)


@pytest.fixture
def home(
    request: pytest.FixtureRequest, tmp_path: Path, peer: Deployment, monkeypatch: Any
) -> Iterator[Deployment]:
    monkeypatch.setenv("PEER_SECRET", SECRET)
    yield from home_of(request, tmp_path, peer, poll=120)


def run_on_peer(a: Deployment, log: Path, sleep: float = 0.0) -> dict[str, Any]:
    event, _ = record_event(
        a.runtime.store,
        a.runtime.registry,
        a.settings,
        a.runtime.publish,
        {"type": "peer.run", "payload": {"log": str(log), "sleep": sleep}},
    )
    return event


def remote_job_of(a: Deployment, event: dict[str, Any]) -> str:
    """The id of the remote_job the event started, once it has."""

    def started() -> str | None:
        for job in a.runtime.store.list_jobs(kind="remote_job")[0]:
            if a.runtime.store.describe(job["id"])["parent"]["id"] == event["job_id"]:
                return str(job["id"])
        return None

    return wait_until(started, 60, "the remote_job to start")


def when(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_the_peer_runs_the_kind_and_its_callback_wakes_the_step_at_once(
    home: Deployment, peer: Deployment, processes: Processes, tmp_path: Path
) -> None:
    # Given A subscribed to run it_effect on B, and polling B only every 120 s
    log = tmp_path / "effects.txt"

    # When an event is recorded on A
    event = run_on_peer(home, log)

    # Then A's event succeeds long before a poll could have noticed: B's callback woke it
    done = wait_for_job(home.runtime, event["job_id"], 90, logs=processes.logs)
    assert done["status"] == "succeeded", done["error"]
    remote = home.runtime.store.describe(done["result"]["processes"]["on-peer"]["job"])
    assert remote["kind"] == "remote_job" and remote["status"] == "succeeded"
    sent = remote["result"]
    # and the job ran on B, once, under A's job id as its idempotency key
    theirs = peer.runtime.store.describe(sent["remote_id"])
    assert theirs["status"] == "succeeded" and theirs["kind"] == "it_effect"
    assert theirs["idempotency_key"] == remote["id"]
    assert len(log.read_text().split()) == 1
    assert when(remote["finished_at"]) - when(theirs["finished_at"]) < 10


def test_with_callbacks_blocked_it_still_finishes_by_polling(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    peer: Deployment,
    processes: Processes,
    monkeypatch: Any,
) -> None:
    # Given A's public address unreachable from B (every callback is lost), and a
    # poll every second
    monkeypatch.setenv("PEER_SECRET", SECRET)
    nowhere = f"http://127.0.0.1:{free_port()}"
    deployments = home_of(request, tmp_path, peer, poll=1, public_url=nowhere)
    a = next(deployments)
    try:
        # When an event is recorded on A
        event = run_on_peer(a, tmp_path / "effects.txt")

        # Then it still ends, found by polling
        done = wait_for_job(a.runtime, event["job_id"], 90, logs=processes.logs)
        assert done["status"] == "succeeded", done["error"]
        assert (tmp_path / "effects.txt").read_text().count("\n") == 1
    finally:
        next(deployments, None)


def test_a_forged_callback_is_refused_and_wakes_nothing(
    home: Deployment, peer: Deployment, processes: Processes, tmp_path: Path
) -> None:
    # Given an event whose process waits for a job B runs for 6 s
    event = run_on_peer(home, tmp_path / "effects.txt", sleep=6)
    job_id = remote_job_of(home, event)
    wait_until(
        lambda: home.runtime.store.describe(job_id)["status"] == "waiting",
        60,
        "the remote_job to wait",
    )
    theirs = home.runtime.store.describe(job_id)["steps"][0]["output"]["remote_id"]
    url = f"{home.url}/api/v1/callbacks/{job_id}"
    body = encode({"event": "job.succeeded", "delivery": "x", "job": {"id": theirs}})

    def post(payload: bytes, signed_with: str | None, target: str = url) -> requests.Response:
        headers = {"Content-Type": "application/json"}
        if signed_with is not None:
            headers[SIGNATURE_HEADER] = signature(signed_with, payload)
        return requests.post(target, data=payload, headers=headers, timeout=10)

    # When callbacks come unsigned, signed with another secret, signed for another
    # job, or for a job that waits for none
    other = encode({"event": "job.succeeded", "delivery": "x", "job": {"id": "not-theirs"}})
    answers = [
        post(body, None),
        post(body, "guessed-secret"),
        post(other, SECRET),
        post(body, SECRET, f"{home.url}/api/v1/callbacks/{event['job_id']}"),
    ]

    # Then each is refused, saying why, and the step still waits
    assert [a.status_code for a in answers] == [403, 403, 403, 404]
    assert "signature does not match" in answers[0].json()["message"]
    assert "signature does not match" in answers[1].json()["message"]
    assert "does not wait for job not-theirs" in answers[2].json()["message"]
    assert home.runtime.store.describe(job_id)["status"] == "waiting"
    # and the genuine end still finishes it
    done = wait_for_job(home.runtime, event["job_id"], 90, logs=processes.logs)
    assert done["status"] == "succeeded", done["error"]
