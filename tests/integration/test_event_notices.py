"""A subscription whose ``run`` is an email or a webhook, on RabbitMQ + PostgreSQL with
real workers: the mail reaches a real SMTP server (aiosmtpd) once, telling the event
with its dataset and payload and a link, and the webhook reaches a real receiver
signed, with credentials masked in both."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from prodinf.celery_app import create_celery
from prodinf.kinds.event_record import record_event
from prodinf.runtime import Runtime
from tests.conftest import Processes
from tests.integration.conftest import delete_queues, stack_settings
from tests.integration.servers import Smtp, WebhookReceiver
from tests.waiting import wait_for_job

pytestmark = pytest.mark.integration

SECRET = "notice-secret-5d1"
PASSWORD = "s3cret-pw"

SUBSCRIPTIONS = """
subscriptions:
  - name: tell-production
    on: [new_assembly]
    run:
      email: ["production@example.org", "{{ payload.owner }}"]
      subject: "New assembly: {{ dataset.name }} ({{ dataset.assembly }})"
  - name: call-hook
    on: [new_assembly]
    run: {webhook: "{{ payload.hook }}"}
"""


@pytest.fixture
def runtime(
    request: pytest.FixtureRequest,
    home: Path,
    tmp_path: Path,
    smtp: Smtp,
    processes: Processes,
) -> Iterator[Runtime]:
    """RabbitMQ + PostgreSQL, an email worker (the mail and the webhook) and an event
    worker (the event's end)."""
    (tmp_path / "subscriptions.yaml").write_text(SUBSCRIPTIONS)
    settings = stack_settings(
        home,
        "servers",
        request,
        subscriptions=tmp_path / "subscriptions.yaml",
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        webhook_secret=SecretStr(SECRET),
        public_url="https://prodinf.example.org",
    )
    processes.worker(settings, queues=settings.queue_email, module="prodinf.email_tasks")
    processes.worker(settings, queues=settings.queue_event, module="prodinf.event_tasks")
    rt = Runtime(settings, create_celery(settings))
    yield rt
    rt.close()
    delete_queues(settings)


def test_an_email_and_a_webhook_tell_the_event(
    runtime: Runtime, smtp: Smtp, hook: WebhookReceiver
) -> None:
    # When a new assembly is recorded with a payload holding a credential
    payload = {
        "owner": "ann@example.org",
        "hook": hook.url,
        "server_uri": f"mysql://admin:{PASSWORD}@staging:3306",
    }
    event, _ = record_event(
        runtime.store,
        runtime.registry,
        runtime.settings,
        runtime.publish,
        {"type": "new_assembly", "dataset": "homo_sapiens_core_115_38", "payload": payload},
    )
    done = wait_for_job(runtime, event["job_id"], 90)

    # Then the event succeeded, and one mail went to both addresses
    assert done["status"] == "succeeded", done["error"]
    (mail,) = smtp.inbox.messages
    assert mail["To"] == "production@example.org, ann@example.org"
    assert mail["Subject"] == "New assembly: homo_sapiens_core_115_38 (38)"
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Event new_assembly for homo_sapiens_core_115_38." in text
    assert f"https://prodinf.example.org/events/{event['id']}" in text
    assert "mysql://admin:***@staging:3306" in text and PASSWORD not in mail.as_string()

    # and the webhook was called once, signed, naming the event
    (call,) = hook.calls
    expected = hmac.new(SECRET.encode(), call.body, hashlib.sha256).hexdigest()
    assert call.headers["X-Prodinf-Signature"] == f"sha256={expected}"
    sent = call.json()
    assert sent["event"] == "event.new_assembly" and sent["subscription"] == "call-hook"
    assert sent["data"]["id"] == event["id"]
    assert sent["data"]["dataset"]["name"] == "homo_sapiens_core_115_38"
    assert PASSWORD not in call.body.decode()
