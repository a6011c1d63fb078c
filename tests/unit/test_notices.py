"""``notify`` on any job: the notification job a finishing job leaves, and what it delivers.

The engine runs for real on a SQLite store (the ``world``); mail goes to the
embedded outbox; webhooks go to a real HTTP server on 127.0.0.1 that keeps every
call, so signatures are checked over the exact bytes that crossed the socket.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

import prodinf.kinds  # noqa: F401  (registers job_notification)
from prodinf import Retry, Step
from prodinf.config import Settings
from prodinf.engine.context import StepContext
from prodinf.engine.notices import NOTIFICATION_KIND
from prodinf.engine.reconciler import reconcile
from prodinf.engine.registry import registry
from prodinf.engine.runner import Runner
from prodinf.exceptions import PermanentError, ValidationError
from prodinf.mail import outbox_dir, render_job_report
from prodinf.store import JobRow
from prodinf.store.types import utcnow
from prodinf.webhooks import encode, signature
from tests.broker import Broker
from tests.integration.servers import WebhookReceiver
from tests.unit.leaks import logged
from tests.world import World

SECRET = "s3cret-key"
ADDRESS = "producer@example.org"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_secret": SecretStr(SECRET),
            "webhook_timeout": 1.0,
            "public_url": "https://prodinf.example.org",
        }
    )


@pytest.fixture
def kinds(world: World) -> World:
    """The world with job_notification and three kinds: one succeeds, one fails, one waits."""
    world.registry.register(registry.get(NOTIFICATION_KIND))
    runs: dict[str, int] = {}

    def ok(ctx: StepContext) -> dict[str, Any]:
        runs["ok"] = runs.get("ok", 0) + 1
        return {"rows": 123456, "dataset": "homo_sapiens_core_115_38"}

    def broken(ctx: StepContext) -> None:
        raise PermanentError("table gene is empty")

    world.linear("ok", Step("build", ok))
    world.linear("broken", Step("check", broken, retry=Retry(attempts=1)))
    world.linear("slow", Step("wait", lambda ctx: ctx.wait(3600, "waiting")))
    world.runs = runs  # type: ignore[attr-defined]
    return world


def notification_of(world: World, job_id: str) -> dict[str, Any]:
    """The job_notification job the history of ``job_id`` names."""
    (message,) = world.messages(job_id, "notification.queued")
    return world.describe(message.split()[-1])


def outbox(settings: Settings) -> list[EmailMessage]:
    return [
        message_from_bytes(path.read_bytes(), policy=default_policy)  # type: ignore[misc]
        for path in sorted(outbox_dir(settings).glob("*.eml"))
    ]


def make_due(world: World, job_id: str) -> None:
    world.pass_time(job_id)


# -- the notification job --------------------------------------------------------------------


def test_a_finished_job_leaves_a_notification_job_on_the_email_queue(kinds: World) -> None:
    # Given a job submitted with notify (an address and a webhook)
    job_id = kinds.submit("ok", notify={"email": [ADDRESS], "webhook": "https://h.example/x"})

    # When it succeeds
    assert kinds.drive(job_id)["status"] == "succeeded"

    # Then it left a queued notification job on the email queue, carrying the job as it ended
    note = notification_of(kinds, job_id)
    assert note["kind"] == NOTIFICATION_KIND
    assert note["status"] == "queued"
    assert note["queue"] == "email"
    assert note["params"]["email"] == [ADDRESS]
    assert note["params"]["webhook"] == "https://h.example/x"
    ended = note["params"]["job"]
    assert ended["id"] == job_id
    assert ended["status"] == "succeeded"
    assert ended["result"] == {"rows": 123456, "dataset": "homo_sapiens_core_115_38"}
    assert ended["finished_at"] is not None
    # Its message goes out after the job's own, once the finish is committed.
    assert kinds.published[-1] == (note["id"], "email")


def test_no_notify_means_no_notification(kinds: World) -> None:
    # Given a job submitted without notify, when it ends
    job_id = kinds.submit("ok")
    kinds.drive(job_id)

    # Then no notification job was made
    assert kinds.messages(job_id, "notification.queued") == []
    with kinds.store.session() as session:
        assert session.scalars(select(JobRow).where(JobRow.kind == NOTIFICATION_KIND)).all() == []


def test_failed_and_cancelled_jobs_are_reported_too(kinds: World) -> None:
    # Given a job with notify that fails, then its notification names the failure
    failed = kinds.submit("broken", notify={"email": [ADDRESS]})
    assert kinds.drive(failed)["status"] == "failed"
    ended = notification_of(kinds, failed)["params"]["job"]
    assert ended["status"] == "failed"
    assert ended["error"]["message"] == "table gene is empty"
    assert ended["error"]["step"] == "check"

    # Given a waiting job with notify that is cancelled, then it is reported cancelled
    waiting = kinds.submit("slow", notify={"email": [ADDRESS]})
    assert kinds.drive(waiting)["status"] == "waiting"
    kinds.jobs.cancel(waiting)
    note = notification_of(kinds, waiting)
    assert note["params"]["job"]["status"] == "cancelled"
    assert (note["id"], "email") in kinds.published


def test_a_retried_job_is_reported_again_when_it_ends_again(kinds: World) -> None:
    # Given a job with notify that failed, when it is retried and ends again
    job_id = kinds.submit("broken", notify={"email": [ADDRESS]})
    kinds.drive(job_id)
    kinds.jobs.retry(job_id)
    kinds.drive(job_id)

    # Then it left a second notification
    assert len(kinds.messages(job_id, "notification.queued")) == 2


def test_a_notification_whose_message_is_lost_is_sent_by_the_reconciler(
    kinds: World, broker: Broker
) -> None:
    # Given a job with a notification, driven by a worker whose broker (the real
    # embedded one) cannot store a message when the job ends
    job_id = kinds.submit("ok", notify={"email": [ADDRESS]})
    worker = Runner(kinds.store, kinds.registry, kinds.settings, broker.publish)
    with broker.down():
        # When the job ends
        assert kinds.drive(job_id, worker)["status"] == "succeeded"  # the job is not held up

    # Then its notification job is stored, queued, but no message for it reached the broker
    note = notification_of(kinds, job_id)
    assert note["status"] == "queued"
    assert broker.messages() == []

    # And when the clock passes redrive_after, the reconciler sends it to the email queue
    with kinds.store.session() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.id == note["id"])
            .values(next_run_at=utcnow() - timedelta(seconds=1))
        )
    assert reconcile(kinds.store, broker.publish, resend_after=10.0, redrive_after=30.0) == 1
    assert broker.messages() == [(note["id"], "email")]


# -- delivery ---------------------------------------------------------------------------------


def deliver(world: World, job_id: str) -> dict[str, Any]:
    """Drive the notification of ``job_id`` (as the email worker would)."""
    return world.drive(notification_of(world, job_id)["id"])


def test_the_email_and_the_signed_webhook_report_the_job(
    kinds: World, settings: Settings, hook: WebhookReceiver
) -> None:
    # Given a job that succeeded, notifying an address and a webhook
    job_id = kinds.submit("ok", notify={"email": [ADDRESS], "webhook": hook.url})
    kinds.drive(job_id)

    # When its notification is delivered
    note = deliver(kinds, job_id)

    # Then the mail reports the job, with a link to it
    assert note["status"] == "succeeded", note["error"]
    assert set(note["result"]) == {"email", "webhook"}

    (mail,) = outbox(settings)
    assert mail["To"] == ADDRESS
    assert mail["Subject"] == f"[prodinf] ok job {job_id[:8]} succeeded"
    assert mail["X-Prodinf-Job"] == job_id
    for part in ("plain", "html"):
        body = mail.get_body(preferencelist=(part,))
        assert body is not None
        content = body.get_content()
        assert job_id in content
        assert "succeeded" in content
        assert "homo_sapiens_core_115_38" in content and "123456" in content
        assert f"https://prodinf.example.org/jobs/{job_id}" in content

    # And the webhook got a signed JSON report of it
    (call,) = hook.calls
    expected = "sha256=" + hmac.new(SECRET.encode(), call.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(call.headers["X-Prodinf-Signature"], expected)
    assert call.headers["X-Prodinf-Event"] == "job.succeeded"
    assert call.headers["X-Prodinf-Delivery"] == note["id"]
    assert call.headers["Content-Type"] == "application/json"
    document = call.json()
    assert document["event"] == "job.succeeded"
    assert document["delivery"] == note["id"]
    assert document["job"]["id"] == job_id
    assert document["job"]["status"] == "succeeded"
    assert document["job"]["result"]["rows"] == 123456
    assert document["job"]["url"] == f"https://prodinf.example.org/api/v1/jobs/{job_id}"
    assert kinds.runs["ok"] == 1  # type: ignore[attr-defined]


def test_a_failing_webhook_is_retried_and_never_reruns_the_job(
    kinds: World, hook: WebhookReceiver
) -> None:
    # Given a webhook that answers 500, then 503, then 200
    hook.answers = [500, 503]
    job_id = kinds.submit("ok", notify={"webhook": hook.url})
    kinds.drive(job_id)
    note_id = notification_of(kinds, job_id)["id"]

    # When the notification is delivered, and retried as time passes
    for _ in range(2):
        assert kinds.drive(note_id)["status"] == "waiting"  # retry with backoff
        make_due(kinds, note_id)
    assert kinds.drive(note_id)["status"] == "succeeded"

    # Then the same delivery was sent three times, and the job itself ran once
    assert hook.count() == 3
    assert len({call.body for call in hook.calls}) == 1  # the same delivery each time
    assert {call.headers["X-Prodinf-Delivery"] for call in hook.calls} == {note_id}
    assert kinds.runs["ok"] == 1  # type: ignore[attr-defined]
    assert kinds.describe(job_id)["status"] == "succeeded"
    step = kinds.step(note_id, "webhook")
    assert step["attempts"] == 2
    assert "answered 500" in "".join(kinds.messages(note_id, "step.retrying"))


@pytest.mark.parametrize(
    ("answer", "says"),
    [(400, "refused the call: 400"), (302, "do not follow redirects")],
)
def test_a_webhook_that_refuses_fails_the_notification_only(
    kinds: World, hook: WebhookReceiver, answer: int, says: str
) -> None:
    # Given a webhook that refuses the call (4xx) or redirects
    hook.answers = [answer]
    job_id = kinds.submit("ok", notify={"webhook": hook.url})
    kinds.drive(job_id)

    # When the notification is delivered
    note = deliver(kinds, job_id)

    # Then the notification failed, saying why, without a retry; the job did not
    assert note["status"] == "failed"
    assert says in note["error"]["message"]
    assert hook.count() == 1
    assert kinds.describe(job_id)["status"] == "succeeded"


def test_a_webhook_that_hangs_is_given_up_on_and_retried(
    kinds: World, hook: WebhookReceiver
) -> None:
    # Given a webhook that answers only after 3 s
    hook.delay = 3.0  # longer than webhook_timeout (1 s)
    job_id = kinds.submit("ok", notify={"webhook": hook.url})
    kinds.drive(job_id)
    note_id = notification_of(kinds, job_id)["id"]

    # When the notification is delivered, then it gives up after 1 s and waits to retry
    assert kinds.drive(note_id)["status"] == "waiting"
    assert "did not answer within 1s" in kinds.step(note_id, "webhook")["error"]["message"]


def test_a_webhook_unreachable_is_retried(kinds: World) -> None:
    # Given a webhook URL nothing listens at
    job_id = kinds.submit("ok", notify={"webhook": "http://127.0.0.1:9/hook"})
    kinds.drive(job_id)
    note_id = notification_of(kinds, job_id)["id"]

    # When the notification is delivered, then it waits to retry, saying why
    assert kinds.drive(note_id)["status"] == "waiting"
    assert "unreachable" in kinds.step(note_id, "webhook")["error"]["message"]


def test_without_a_secret_webhooks_are_not_signed(
    settings: Settings, hook: WebhookReceiver
) -> None:
    # Given no webhook secret and no public URL, when a notification is delivered
    world = World(settings.model_copy(update={"webhook_secret": SecretStr(""), "public_url": None}))
    try:
        world.registry.register(registry.get(NOTIFICATION_KIND))
        world.linear("ok", Step("build", lambda ctx: 1))
        job_id = world.submit("ok", notify={"webhook": hook.url})
        world.drive(job_id)
        assert deliver(world, job_id)["status"] == "succeeded"
    finally:
        world.close()

    # Then the webhook call is not signed, and has no link
    (call,) = hook.calls
    assert "X-Prodinf-Signature" not in call.headers
    assert call.json()["job"]["url"] is None  # no public_url, no link


def test_the_signature_is_hmac_sha256_of_the_body() -> None:
    # Given a document encoded as compact, sorted JSON
    body = encode({"b": 1, "a": "é"})
    assert body == '{"a":"é","b":1}'.encode()

    # Then its signature is the HMAC-SHA256 of those bytes
    digest = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert signature("k", body) == f"sha256={digest}"


def test_credentials_in_a_result_are_masked_in_mail_and_webhook(
    kinds: World, settings: Settings, hook: WebhookReceiver, logs: pytest.LogCaptureFixture
) -> None:
    # Given a job whose result carries a database URL with its password
    kinds.linear("leaky", Step("s", lambda ctx: {"target": "mysql://u:hunter2@db/x"}))
    job_id = kinds.submit("leaky", notify={"email": [ADDRESS], "webhook": hook.url})
    kinds.drive(job_id)

    # When its notification is delivered
    assert deliver(kinds, job_id)["status"] == "succeeded"

    # Then neither the mail, nor the webhook, nor a log line has the password
    (mail,) = outbox(settings)
    assert b"hunter2" not in mail.as_bytes()
    assert b"hunter2" not in hook.calls[0].body
    assert "mysql://u:***@db/x" in hook.calls[0].json()["job"]["result"]["target"]
    assert "written to" in logged(logs)  # the delivery was logged, without the password
    assert "hunter2" not in logged(logs)


def test_the_html_summary_escapes_what_the_job_returned() -> None:
    # Given a job whose error message is markup
    job = {
        "id": "0123456789",
        "kind": "k",
        "status": "failed",
        "result": None,
        "error": {"message": "<script>alert(1)</script>", "step": "s"},
        "message": None,
        "submitted_by": None,
        "created_at": None,
        "finished_at": None,
    }

    # When its report is rendered
    subject, text, html = render_job_report(job, None)

    # Then the text keeps it as it is, and the HTML escapes it
    assert subject == "[prodinf] k job 01234567 failed"
    assert "<script>" in text
    assert "<script>" not in html and "&lt;script&gt;" in html


# -- what a submission may ask for ------------------------------------------------------------


@pytest.mark.parametrize(
    ("notify", "field"),
    [
        ("someone@example.org", "notify"),
        ({}, "notify"),
        ({"email": ["not an address"]}, "notify.email.0"),
        ({"email": [ADDRESS, "x@y"]}, "notify.email.1"),
        ({"email": "someone@example.org"}, "notify.email"),
        ({"webhook": "ftp://example.org/x"}, "notify.webhook"),
        ({"webhook": "not a url"}, "notify.webhook"),
        ({"sms": "+4412345"}, "notify.sms"),
        ({"email": [ADDRESS] * 51}, "notify.email"),
    ],
)
def test_bad_notify_is_refused_naming_the_field(kinds: World, notify: Any, field: str) -> None:
    # When a job is submitted with a bad notify
    with pytest.raises(ValidationError) as caught:
        kinds.jobs.submit("ok", notify=notify)

    # Then it is refused naming the field, and nothing is stored
    assert caught.value.field == field
    with kinds.store.session() as session:
        assert session.scalars(select(JobRow)).all() == []


def test_notify_needs_the_notification_kind(world: World) -> None:
    # Given a registry without the job_notification kind
    world.linear("ok", Step("build", lambda ctx: 1))

    # When a job is submitted with notify, then it is refused, saying why
    with pytest.raises(ValidationError, match="job_notification") as caught:
        world.jobs.submit("ok", notify={"email": [ADDRESS]})
    assert caught.value.field == "notify"


def test_notify_is_shown_with_the_job_credentials_masked(
    kinds: World, logs: pytest.LogCaptureFixture
) -> None:
    # Given a job submitted with a webhook URL that carries credentials
    job_id = kinds.submit(
        "ok", notify={"webhook": "https://bot:hunter2@hooks.example.org/x", "email": [ADDRESS]}
    )

    # When the job is shown, and when it ends and leaves its notification
    shown = json.dumps(kinds.describe(job_id)["notify"])
    kinds.drive(job_id)

    # Then the credentials are masked where the job is shown, and in no log line
    assert "hunter2" not in shown
    assert "hooks.example.org" in shown and ADDRESS in shown
    assert "hunter2" not in logged(logs)
