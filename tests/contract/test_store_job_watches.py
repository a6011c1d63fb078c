"""``email_when_complete`` on a job of this prodinf: woken by that job's end, no polling.

The engine runs for real on each store (SQLite, PostgreSQL, MariaDB: the ``world``);
mail goes to the embedded outbox. No HTTP server answers the job's URL: a look over
HTTP would fail, so a mail that arrives proves the job was read from the store.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

import prodinf.kinds  # noqa: F401  (registers email_when_complete)
from prodinf.engine.registry import registry
from prodinf.engine.steps import Step
from prodinf.exceptions import PermanentError
from prodinf.kinds.job_notification import job_mail
from prodinf.mail import outbox_dir
from prodinf.store.watches import job_watch_url
from tests.world import World

#: A portal that does not exist: nothing may be fetched from it.
PORTAL = "http://127.0.0.1:9"


@pytest.fixture
def notify(world: World) -> World:
    world.registry.register(registry.get("email_when_complete"))
    world.linear("build", Step("run", lambda ctx: {"rows": 42}))
    return world


def mails(world: World) -> list[email.message.EmailMessage]:
    folder = outbox_dir(world.settings)
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in sorted(Path(folder).glob("*.eml"))
    ]


def watch(world: World, job_id: str) -> str:
    url = f"{PORTAL}/api/v1/jobs/{job_id}?format=email"
    return world.submit("email_when_complete", {"url": url, "address": "ada@example.org"})


def test_the_end_of_the_job_wakes_the_notification_at_once(notify: World) -> None:
    """Given a job of this prodinf still queued, when email_when_complete is asked to
    mail its end, then it waits on the job (no next look, no HTTP); when the job
    ends, that transaction wakes it (its message is sent at once), and the mail is the
    job's own summary, the one ?format=email answers."""
    job = notify.submit("build")
    waiter = watch(notify, job)
    assert notify.drive(waiter)["status"] == "waiting"
    step = notify.step(waiter, "watch")
    assert step["waiting_for"] == f"until job {job} ends (it is queued)"
    assert step["next_look_at"] is None  # nothing is looked at: the job's end wakes it
    notify.published.clear()

    assert notify.drive(job)["status"] == "succeeded"

    assert (waiter, "email") in [(j, q.removesuffix(".due")) for j, q in notify.published]
    assert notify.drive(waiter)["status"] == "succeeded"
    [mail] = mails(notify)
    detail = notify.describe(job)
    ended = {**detail, "message": detail["progress"]["message"]}
    subject, text, _ = job_mail(ended, PORTAL)
    assert mail["Subject"] == subject
    assert f"build job {job[:8]}" in subject and "succeeded" in subject
    assert mail.get_body(("plain",)).get_content().strip() == text.strip()  # type: ignore[union-attr]
    assert notify.describe(waiter)["result"]["status"] == "succeeded"


def test_a_job_that_has_ended_already_is_mailed_at_once(notify: World) -> None:
    """Given a job that has failed, when email_when_complete is asked for it, then the
    mail goes at the first run, saying it failed."""

    def broken(ctx: object) -> None:
        raise PermanentError("the input is bad")

    notify.linear("broken", Step("run", broken))
    job = notify.submit("broken")
    assert notify.drive(job)["status"] == "failed"

    waiter = watch(notify, job)
    assert notify.drive(waiter)["status"] == "succeeded"
    [mail] = mails(notify)
    assert "failed" in mail["Subject"]


def test_a_watch_registered_after_the_end_runs_again_at_once(notify: World) -> None:
    """Given a step that looked at the job while it ran and asks to wait on it, when the
    job has ended before that wait is recorded (another worker ended it meanwhile),
    then the wait is recorded due now, not until a poll: no end is missed."""
    job = notify.submit("build")
    seen: list[str] = []

    def late(ctx: object) -> object:
        seen.append("looked")
        if len(seen) == 1:
            notify.drive(job)  # the job ends between the look and the wait
            return ctx.wait(3600, "until it ends", watch=_job_watch(job))  # type: ignore[attr-defined]
        return "woken"

    notify.linear("late", Step("wait", late))
    waiter = notify.submit("late")
    notify.published.clear()

    detail = notify.drive(waiter)

    assert detail["status"] in {"waiting", "succeeded"}
    assert (waiter, "jobs") in [(j, q.removesuffix(".due")) for j, q in notify.published]
    assert notify.drive(waiter)["status"] == "succeeded"
    assert seen == ["looked", "looked"]


def _job_watch(job_id: str) -> object:
    from prodinf.engine.waits import Watch

    return Watch(job_watch_url(job_id), 3600.0)
