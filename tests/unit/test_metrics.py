"""``GET /metrics``: what the engine counted, the store's unfinished work, the broker's
queues, in Prometheus' text format, read back with prometheus_client's own parser.

The counters are the process's (this test process keeps them in memory), so each
test names its kinds, queues and services with a tag of its own: what it finds under
those labels is what it did, exactly.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from prodinf import Retry, Step, StepContext, metrics
from prodinf.config import Settings
from prodinf.engine.registry import registry
from prodinf.exceptions import PermanentError, TransientError
from prodinf.kinds.subscriptions import REMOTE_KIND
from prodinf.mail import Mail, deliver, message_id_for
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.store import upgrade, workers
from prodinf.store.models import WORKERS
from prodinf.store.types import utcnow
from prodinf.webhooks import post
from tests.loopback import Reply, Site
from tests.world import World

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: FlaskClient, **headers: str) -> Samples:
    """Every sample of a ``GET /metrics``, parsed as Prometheus parses it."""
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.content_type.startswith("text/plain; version=")
    found: Samples = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample ``name`` with exactly ``labels``; None when the scrape has none."""
    return samples.get((name, frozenset(labels.items())))


def labelled(samples: Samples, name: str, **having: str) -> dict[frozenset[Any], float]:
    """The samples ``name`` whose labels include ``having``."""
    return {
        labels: v
        for (n, labels), v in samples.items()
        if n == name and set(having.items()) <= labels
    }


@pytest.fixture
def portal(settings: Settings) -> Iterator[Flask]:
    """The portal on the test's embedded settings, its store migrated."""
    app = create_app(settings)
    upgrade(app.extensions["prodinf"].store)
    yield app
    app.extensions["prodinf"].close()


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


def test_a_scrape_holds_what_the_engine_did(
    world: World, portal: Flask, settings: Settings, tag: str
) -> None:
    """Given jobs that succeed, fail, retry and revert on a queue of their own, when the
    portal is scraped, then each counter holds exactly what happened, each histogram
    counts every run, job and start, and the unfinished work is in the gauges."""
    queue = f"mq-{tag}"
    ok, flaky, bad, undo, sleepy, idle = (
        f"m_{name}_{tag}" for name in ("ok", "flaky", "bad", "undo", "sleepy", "idle")
    )
    tries: list[int] = []

    def flake(ctx: StepContext[Any]) -> str:
        tries.append(ctx.attempt)
        if ctx.attempt == 1:
            raise TransientError("not yet")
        return "done"

    def refuse(ctx: StepContext[Any]) -> None:
        raise PermanentError("no")

    world.linear(ok, Step("fetch", lambda ctx: 1), Step("store", lambda ctx: 2), queue=queue)
    world.linear(flaky, Step("call", flake, retry=Retry(attempts=3, backoff=60)), queue=queue)
    world.linear(bad, Step("check", refuse), queue=queue)
    world.linear(
        undo,
        Step("copy", lambda ctx: "copied", revert=lambda ctx: None),
        Step("check", refuse),
        queue=queue,
    )
    world.linear(sleepy, Step("nap", lambda ctx: ctx.wait(3600, "napping")), queue=queue)
    world.linear(idle, Step("never", lambda ctx: None), queue=queue)

    # When they run as workers would run them
    before = utcnow()
    for _ in range(3):
        assert world.drive(world.submit(ok))["status"] == "succeeded"
    flaky_id = world.submit(flaky)
    assert world.drive(flaky_id)["status"] == "waiting"  # its retry
    world.pass_time(flaky_id)
    assert world.drive(flaky_id)["status"] == "succeeded"
    assert world.drive(world.submit(bad))["status"] == "failed"
    assert world.drive(world.submit(undo))["status"] == "reverted"
    assert world.drive(world.submit(sleepy))["status"] == "waiting"
    world.submit(idle)  # queued: no worker takes it
    samples = scrape(portal.test_client())
    after = utcnow()

    # Then the counters hold exactly what happened
    submitted = {ok: 3, flaky: 1, bad: 1, undo: 1, sleepy: 1, idle: 1}
    for kind, count in submitted.items():
        assert value(samples, "prodinf_jobs_submitted_total", kind=kind) == count
    finished = {(ok, "succeeded"): 3, (flaky, "succeeded"): 1, (bad, "failed"): 1,
                (undo, "reverted"): 1}  # fmt: skip
    for (kind, status), count in finished.items():
        assert value(samples, "prodinf_jobs_finished_total", kind=kind, status=status) == count
    for kind in (sleepy, idle):
        assert labelled(samples, "prodinf_jobs_finished_total", kind=kind) == {}
    runs = {
        (ok, "fetch", "succeeded"): 3,
        (ok, "store", "succeeded"): 3,
        (flaky, "call", "retried"): 1,
        (flaky, "call", "succeeded"): 1,
        (bad, "check", "failed"): 1,
        (undo, "copy", "succeeded"): 1,
        (undo, "check", "failed"): 1,
        (undo, "copy", "reverted"): 1,
        (sleepy, "nap", "waiting"): 1,
    }
    counted = {
        (dict(labels)["kind"], dict(labels)["step"], dict(labels)["outcome"]): v
        for labels, v in labelled(samples, "prodinf_steps_total").items()
        if dict(labels)["kind"] in submitted
    }
    assert counted == runs
    assert tries == [1, 2]

    # and each histogram counts every run of a step, every job ended, every start
    for kind, step in {(k, s) for k, s, _ in runs}:
        ran = sum(n for (k, s, _), n in runs.items() if (k, s) == (kind, step))
        took = value(samples, "prodinf_step_duration_seconds_count", kind=kind, step=step)
        assert took == ran, (kind, step)
        assert (
            value(samples, "prodinf_step_duration_seconds_bucket", kind=kind, step=step, le="+Inf")
            == ran
        )
    for kind in submitted:
        ended = sum(n for (k, _), n in finished.items() if k == kind)
        assert (value(samples, "prodinf_job_duration_seconds_count", kind=kind) or 0) == ended
    # started from the queue: 7 jobs' first steps, and the retry once it came due
    assert value(samples, "prodinf_schedule_to_start_seconds_count", queue=queue) == 8
    waited = value(samples, "prodinf_schedule_to_start_seconds_sum", queue=queue)
    assert waited is not None and waited >= 0

    # and the gauges show the work not yet over
    assert value(samples, "prodinf_jobs_active", kind=sleepy, status="waiting") == 1
    assert value(samples, "prodinf_jobs_active", kind=idle, status="queued") == 1
    assert value(samples, "prodinf_jobs_active", kind=ok, status="queued") is None  # all ended
    # a kind the portal runs is there with none, so that a query of it finds a 0
    assert value(samples, "prodinf_jobs_active", kind="http_get", status="running") == 0
    assert value(samples, "prodinf_waits_pending", kind=sleepy) == 1
    assert value(samples, "prodinf_waits_pending", kind=ok) is None
    age = value(samples, "prodinf_oldest_queued_job_age_seconds", queue=queue)
    assert age is not None and 0 <= age <= (after - before).total_seconds()
    assert value(samples, "prodinf_oldest_queued_job_age_seconds", queue="jobs") == 0
    assert value(samples, "prodinf_store_up") == 1


def test_the_gauges_show_handovers_by_stage_and_workers_by_queue(
    world: World, portal: Flask, tag: str
) -> None:
    """Given a handover waiting at its copy, one not started, and a worker that said it
    is alive on a queue (and its lane), then the scrape has each handover at its stage
    and the worker on that queue, not on the others."""
    stages = [Step("check", lambda ctx: "ok"), Step("copy", lambda ctx: ctx.wait(3600, "copying"))]
    world.linear("handover", *stages, Step("register", lambda ctx: "ok"))
    world.drive(world.submit("handover"))
    world.submit("handover")
    queue = f"wq-{tag}"
    workers.seen(world.store, f"w-{tag}@host", [queue, f"{queue}.due"], os.getpid(), utcnow())
    gone = utcnow() - timedelta(seconds=workers.SEEN_WITHIN + 5)
    workers.seen(world.store, f"old-{tag}@host", ["jobs"], os.getpid(), gone)
    with world.store.transaction() as conn:  # it said so long ago: not alive
        conn.execute(
            update(WORKERS).where(WORKERS.c.name == f"old-{tag}@host").values(seen_at=gone)
        )

    samples = scrape(portal.test_client())

    assert labelled(samples, "prodinf_handovers_in_flight") == {
        frozenset({("stage", "copy")}): 1,
        frozenset({("stage", "check")}): 1,
    }
    assert value(samples, "prodinf_workers_alive", queue=queue) == 1
    assert value(samples, "prodinf_workers_alive", queue="jobs") == 0


def test_the_embedded_broker_queues_are_counted(portal: Flask, settings: Settings) -> None:
    """Given messages sent to the email queue and the jobs queue's lane and not taken,
    then the scrape counts them on their queues, and none elsewhere."""
    rt: Runtime = portal.extensions["prodinf"]
    for _ in range(3):
        rt.publish(str(uuid.uuid4()), settings.queue_email)
    rt.republish(str(uuid.uuid4()), settings.queue_jobs)

    samples = scrape(portal.test_client())

    assert value(samples, "prodinf_queue_messages", queue="email") == 3
    assert value(samples, "prodinf_queue_messages", queue="jobs.due") == 1
    assert value(samples, "prodinf_queue_messages", queue="jobs") == 0
    assert value(samples, "prodinf_broker_up") == 1
    assert labelled(samples, "prodinf_queue_consumers") == {}  # RabbitMQ's alone


def test_mails_webhooks_and_service_calls_are_counted(
    portal: Flask, settings: Settings, tmp_path: Any, tag: str
) -> None:
    """Given a mail to the outbox, webhooks taken and refused, and a remote job on an
    HTTP job service that answers, then each is counted by its outcome."""
    client = portal.test_client()
    before = scrape(client)
    mail = Mail(to=["a@example.org"], subject="s", text="t", message_id=message_id_for(tag))
    deliver(mail, settings)
    routes = {
        "/hook": Reply(200, {}),
        "/broken": Reply(500, "down"),
        "/runs": Reply(201, {"id": "r1"}),
        "/runs/r1": Reply(200, {"state": "done"}),
    }
    with Site(routes) as site:
        post(f"{site.base}/hook", {}, event="e", delivery="d1", settings=settings)
        with pytest.raises(TransientError):
            post(f"{site.base}/broken", {}, event="e", delivery="d2", settings=settings)
        service = f"svc-{tag}"
        (tmp_path / "services.yaml").write_text(
            "services:\n"
            f"  - {{name: {service}, type: http, url: '{site.base}', submit: {{path: /runs}}, "
            "job_id: /id, status_url: '/runs/{{ job_id }}', status: /state, pending: [running], "
            "succeeded: [done], failed: [failed]}\n"
        )
        world = World(settings.model_copy(update={"services": tmp_path / "services.yaml"}))
        world.registry.register(registry.get(REMOTE_KIND))
        try:
            job = world.drive(world.submit(REMOTE_KIND, {"service": service}))
        finally:
            world.close()
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert job["status"] == "succeeded"
    assert grew("prodinf_notifications_total", channel="email", outcome="outbox") == 1
    assert grew("prodinf_notifications_total", channel="webhook", outcome="delivered") == 1
    assert grew("prodinf_notifications_total", channel="webhook", outcome="error") == 1
    assert value(after, "prodinf_service_calls_total", service=service, outcome="ok") == 2


def test_metrics_asks_for_a_token_unless_open(settings: Settings) -> None:
    """Given authentication on, then /metrics answers 401 (JSON, saying how) without a
    token, and the metrics with a viewer's read-only token; open, it answers anyone,
    whatever Host it is asked by."""
    from prodinf.store.users import Users

    app = create_app(settings.model_copy(update={"auth": "users"}))
    rt: Runtime = app.extensions["prodinf"]
    upgrade(rt.store)
    users = Users(rt.store)
    users.add("vic", "viewer", "vic-password-long")
    token, _ = users.create_token("vic", read_only=True)
    client = app.test_client()

    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in refused.get_json()["message"]
    assert client.get("/metrics", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    assert value(scrape(client, Authorization=f"Bearer {token}"), "prodinf_store_up") == 1
    rt.close()

    open_app = create_app(settings.model_copy(update={"auth": "users", "metrics_auth": "open"}))
    anyone = open_app.test_client()
    assert value(scrape(anyone), "prodinf_store_up") == 1
    assert value(scrape(anyone, Host="10.1.2.3:5000"), "prodinf_store_up") == 1
    assert anyone.get("/api/v1/jobs").status_code == 401  # the rest still needs a token
    open_app.extensions["prodinf"].close()


def test_sharing_after_counting_is_refused() -> None:
    """Given a process that has counted (this one), then moving its counts to a shared
    folder is refused: they would stay in its memory, out of every scrape."""
    metrics.job_submitted("m_any")
    with pytest.raises(RuntimeError, match="before the first count"):
        metrics.share(Path("/nonexistent/never-made"))
    assert metrics.folder() is None
