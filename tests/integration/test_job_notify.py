"""``notify`` on any job, end to end on RabbitMQ + PostgreSQL: a jobs worker runs the
job, ``celery -A prodinf.email_tasks worker`` delivers the email (aiosmtpd) and the
signed webhook (a real HTTP server on loopback)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from tests.conftest import Processes
from tests.integration.conftest import delete_queues
from tests.integration.servers import Smtp, StatusServer, WebhookReceiver
from tests.integration.test_email import ADDRESS, email_worker, mail_settings, text_and_html
from tests.loopback import free_port
from tests.waiting import wait_for_job, wait_until

pytestmark = pytest.mark.integration

SECRET = "it-webhook-secret"


def notification_id(rt: Runtime, job_id: str) -> str:
    def queued() -> str | None:
        for entry in rt.store.describe(job_id)["history"]:
            if entry["event"] == "notification.queued":
                return str(entry["message"].split()[-1])
        return None

    return wait_until(queued, 30, "the notification job")


def stack(home: Path, request: pytest.FixtureRequest, smtp: Smtp) -> Settings:
    return mail_settings(
        home, "servers", request, smtp, webhook_secret=SecretStr(SECRET), public_url=None
    )


def test_a_job_submitted_with_notify_mails_and_calls_the_webhook_once_each(
    request: pytest.FixtureRequest,
    home: Path,
    status: StatusServer,
    hook: WebhookReceiver,
    processes: Processes,
) -> None:
    # Given a jobs worker, an email worker, a mail server, and a webhook receiver
    # that is briefly unavailable
    smtp = Smtp(free_port())
    smtp.start()
    settings = stack(home, request, smtp)
    hook.answers = [503]  # the receiver is briefly unavailable
    rt = Runtime(settings, create_celery(settings))
    try:
        processes.worker(settings, queues=settings.queue_jobs)
        email_worker(processes, settings)
        client = create_app(settings, runtime=rt).test_client()
        # When a job that succeeds and one that fails are submitted with notify
        notify = {"email": [ADDRESS], "webhook": hook.url}
        ok = client.post(
            "/api/v1/jobs",
            json={
                "kind": "http_get",
                "params": {"url": f"{status.base}/job/data?running=0"},
                "notify": notify,
            },
        )
        bad = client.post(
            "/api/v1/jobs",
            json={
                "kind": "http_get",
                "params": {"url": f"{status.base}/missing"},
                "notify": {"email": [ADDRESS]},
            },
        )
        assert ok.status_code == bad.status_code == 201, (ok.get_json(), bad.get_json())
        ok_id, bad_id = ok.get_json()["id"], bad.get_json()["id"]

        assert wait_for_job(rt, ok_id, 60, logs=processes.logs)["status"] == "succeeded"
        assert wait_for_job(rt, bad_id, 60, logs=processes.logs)["status"] == "failed"
        notes = [notification_id(rt, ok_id), notification_id(rt, bad_id)]
        for note in notes:
            assert wait_for_job(rt, note, 90, logs=processes.logs)["status"] == "succeeded"

        # Then each job ends as it should, and each notification is delivered:
        # One email per job, each saying how it ended.
        assert smtp.inbox.count() == 2
        by_job = {m["X-Prodinf-Job"]: m for m in smtp.inbox.messages}
        good, failed = by_job[ok_id], by_job[bad_id]
        assert good["To"] == ADDRESS
        assert good["Subject"] == f"[prodinf] http_get job {ok_id[:8]} succeeded"
        assert failed["Subject"] == f"[prodinf] http_get job {bad_id[:8]} failed"
        text, html = text_and_html(good)
        for part in (text, html):
            assert ok_id in part and "status_code" in part and "sha256" in part
        text, html = text_and_html(failed)
        for part in (text, html):
            assert "answered 404" in part

        # The webhook: tried twice (503, then 200), same signed body, valid signature.
        assert hook.count() == 2
        first, second = hook.calls
        assert first.body == second.body
        expected = "sha256=" + hmac.new(SECRET.encode(), second.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(second.headers["X-Prodinf-Signature"], expected)
        document: dict[str, Any] = second.json()
        assert document["event"] == "job.succeeded"
        assert document["job"]["id"] == ok_id
        assert document["job"]["result"]["status_code"] == 200
        assert document["delivery"] == notes[0]

        # Delivery never re-ran the job: the URL was fetched once.
        assert status.looked("/job/data") == 1
        assert status.looked("/missing") == 1
    finally:
        rt.close()
        smtp.stop()
        delete_queues(settings)


def test_mail_server_down_holds_up_only_the_notification(
    request: pytest.FixtureRequest, home: Path, status: StatusServer, processes: Processes
) -> None:
    # Given a mail server that is down
    down = Smtp(free_port())  # not started: connections are refused
    settings = stack(home, request, down)
    rt = Runtime(settings, create_celery(settings))
    try:
        processes.worker(settings, queues=settings.queue_jobs)
        email_worker(processes, settings)
        # When a job asking for a mail runs
        job, _ = rt.jobs.submit(
            "http_get", {"url": f"{status.base}/job/held?running=0"}, notify={"email": [ADDRESS]}
        )
        # Then the job succeeds all the same, and only its notification waits
        assert wait_for_job(rt, job["id"], 60, logs=processes.logs)["status"] == "succeeded"
        note = notification_id(rt, job["id"])

        def retried() -> bool:
            steps = rt.store.describe(note)["steps"]
            return bool(steps[0]["attempts"] >= 2)

        wait_until(
            retried, 60, "the email step to fail twice against a closed port", logs=processes.logs
        )
        # When the mail server comes up, then the mail goes out once, and the job was
        # not run again
        down.start()
        assert wait_for_job(rt, note, 120, logs=processes.logs)["status"] == "succeeded"
        assert down.inbox.count() == 1
        assert status.looked("/job/held") == 1
        assert rt.store.describe(job["id"])["status"] == "succeeded"
    finally:
        rt.close()
        down.stop()
        delete_queues(settings)
