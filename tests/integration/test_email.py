"""``email_when_complete`` end to end: a real SMTP server (aiosmtpd), a real HTTP status
server on loopback, and a worker started as users start it:
``celery -A prodinf.email_tasks worker -l info``.

Given a URL that answers ``running`` a few times and then ``complete``; when someone
asks to be mailed when it is done (from Python, the REST API, the web form or the CLI);
then exactly one email arrives, with the result, and the Celery result says so.
"""

from __future__ import annotations

import asyncio
import email
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.store import JobRow
from tests.conftest import Processes, env_for
from tests.integration.conftest import delete_queues, stack_settings
from tests.integration.servers import Inbox, Smtp, StatusServer
from tests.loopback import Answer, Loopback, Reply, Request, free_port
from tests.pages import csrf
from tests.waiting import wait_for_job, wait_until

pytestmark = pytest.mark.integration

ADDRESS = "producer@example.org"
FAULTS = "tests.integration.faults"


@pytest.fixture
def runtimes() -> Iterator[Callable[[Settings], Runtime]]:
    """Make submitting-side runtimes that are closed even when the test fails."""
    made: list[Runtime] = []

    def make(settings: Settings) -> Runtime:
        rt = Runtime(settings, create_celery(settings))
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


# -- stacks ---------------------------------------------------------------------------------------


def mail_settings(
    home: Path, kind: str, request: pytest.FixtureRequest, smtp: Smtp | None, **overrides: object
) -> Settings:
    values: dict[str, object] = {"poll_interval": 0.3, **overrides}
    if smtp is not None:
        values.update(smtp_host="127.0.0.1", smtp_port=smtp.port)
    return stack_settings(home, kind, request, **values)


@pytest.fixture
def servers_mail(request: pytest.FixtureRequest, home: Path, smtp: Smtp) -> Iterator[Settings]:
    """RabbitMQ + PostgreSQL, mail to the test's SMTP server."""
    settings = mail_settings(home, "servers", request, smtp)
    yield settings
    delete_queues(settings)


def email_worker(
    processes: Processes,
    settings: Settings,
    name: str = "email",
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``celery -A prodinf.email_tasks worker -l info``, exactly as a user starts it."""
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "prodinf.email_tasks",
        "worker",
        "-l",
        "info",
        "-c",
        "2",
        "-n",
        f"{name}-{os.urandom(3).hex()}@%h",
    ]
    return processes.start(args, env_for(settings, **(extra_env or {})), name)


PYTHON_SHELL = """
import json, sys, time
from prodinf.email_tasks import email_when_complete
r = email_when_complete.delay(sys.argv[1], sys.argv[2], **json.loads(sys.argv[3]))
print("task", r.id, flush=True)
looks = 0
while not r.ready():
    looks += 1
    time.sleep(0.2)
print("result", json.dumps(r.get(timeout=10)), looks, flush=True)
"""


def python_shell(
    settings: Settings, url: str, address: str, timeout: float, **options: Any
) -> tuple[dict[str, Any], int]:
    """Run the classic ``delay`` / ``while not r.ready()`` / ``r.get()`` loop in a new process."""
    done = subprocess.run(
        [sys.executable, "-c", PYTHON_SHELL, url, address, json.dumps(options)],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("result "))
    payload, looks = line[len("result ") :].rsplit(" ", 1)
    return json.loads(payload), int(looks)


def text_and_html(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None, "the mail needs a text and an HTML part"
    return text.get_content(), html.get_content()


def check_summary(message: EmailMessage, url: str) -> None:
    assert message["To"] == ADDRESS
    assert message["From"]
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith(">")
    assert "complete" in message["Subject"]
    text, html = text_and_html(message)
    for part in (text, html):
        assert url in part.replace("&amp;", "&")
        assert "complete" in part
        assert "homo_sapiens_core_115_38" in part
        assert "123456" in part


# -- the tests ------------------------------------------------------------------------


def test_email_when_complete_from_a_python_shell_with_a_celery_worker(
    servers_mail: Settings, smtp: Smtp, status: StatusServer, processes: Processes
) -> None:
    # Given an email worker, and a URL that says running three times, then complete
    email_worker(processes, servers_mail)
    url = f"{status.base}/job/shell?running=3"

    # When a Python shell calls email_when_complete.delay and waits on the result
    try:
        result, looks = python_shell(servers_mail, url, ADDRESS, timeout=90)
    except BaseException:
        print(processes.logs())
        raise

    # Then exactly one summary mail arrives, and the Celery result describes it
    assert set(result) == {"message_id", "to", "subject"}
    assert result["to"] == ADDRESS
    assert smtp.inbox.count() == 1, "exactly one email"
    message = smtp.inbox.messages[0]
    assert result["message_id"] == message["Message-ID"]
    assert result["subject"] == message["Subject"]
    check_summary(message, url)
    assert status.looked("/job/shell") == 4, "three looks said running, the fourth complete"
    assert looks > 1, "r.ready() was false while the URL was still running"


def test_a_document_with_subject_and_body_is_sent_as_is(
    servers_mail: Settings,
    smtp: Smtp,
    processes: Processes,
    http_server: Callable[[Answer], Loopback],
) -> None:
    # Given a URL whose final document brings its own subject and body
    def done(request: Request) -> Reply:
        return Reply(
            200,
            {
                "status": "succeeded",
                "subject": "Handover of db1 done",
                "body": "All 12 checks passed.\n",
            },
        )

    server = http_server(done)
    email_worker(processes, servers_mail)

    # When someone asks to be mailed when it is done
    result, _ = python_shell(servers_mail, server.url("/done"), ADDRESS, timeout=120)

    # Then one mail arrives with that subject and body
    assert smtp.inbox.count() == 1, "exactly one email"
    message = smtp.inbox.messages[0]
    assert message["Subject"] == result["subject"] == "Handover of db1 done"
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().strip() == "All 12 checks passed."


def test_the_rest_endpoint_the_form_and_the_cli_each_send_one_email(
    servers_mail: Settings, smtp: Smtp, status: StatusServer, processes: Processes
) -> None:
    # Given an email worker and the portal on RabbitMQ + PostgreSQL
    email_worker(processes, servers_mail)
    rt = Runtime(servers_mail, create_celery(servers_mail))
    app = create_app(servers_mail, runtime=rt)
    client = app.test_client()
    try:
        # When a notification is asked for through the REST API, the web form and the CLI
        # REST
        api_url = f"{status.base}/job/api?running=2"
        answer = client.post("/api/v1/notifications", json={"url": api_url, "address": ADDRESS})
        assert answer.status_code == 201, answer.get_json()
        created = answer.get_json()
        assert set(created) == {"id", "url"}
        assert client.get(created["url"]).get_json()["kind"] == "email_when_complete"
        assert wait_for_job(rt, created["id"], 60, logs=processes.logs)["status"] == "succeeded"

        # The web form, with its CSRF token, as a browser posts it
        form_url = f"{status.base}/job/form?running=2"
        posted = client.post(
            "/notifications/new",
            data={
                "url": form_url,
                "address": ADDRESS,
                "csrf_token": csrf(client, "/notifications/new"),
            },
        )
        assert posted.status_code in (302, 303), posted.get_data(as_text=True)[:500]
        form_job = posted.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
        assert wait_for_job(rt, form_job, 60, logs=processes.logs)["status"] == "succeeded"

        # The CLI
        cli_url = f"{status.base}/job/cli?running=2"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "prodinf.cli",
                "notify",
                cli_url,
                ADDRESS,
                "--wait",
                "--timeout",
                "60",
            ],
            env=env_for(servers_mail),
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "succeeded" in done.stdout
    finally:
        rt.close()

    # Then each sends exactly one summary mail about its own URL
    wait_until(lambda: smtp.inbox.count() >= 3, 10, "three emails", logs=processes.logs)
    subjects = sorted(str(m["Subject"]) for m in smtp.inbox.messages)
    assert smtp.inbox.count() == 3, subjects
    by_url = {}
    for message in smtp.inbox.messages:
        text, _ = text_and_html(message)
        by_url[next(u for u in (api_url, form_url, cli_url) if u in text)] = message
    assert set(by_url) == {api_url, form_url, cli_url}
    for url, message in by_url.items():
        check_summary(message, url)


def test_mail_server_down_then_up_sends_exactly_one_email(
    request: pytest.FixtureRequest,
    home: Path,
    status: StatusServer,
    processes: Processes,
    runtimes: Callable[[Settings], Runtime],
) -> None:
    # Given a mail server that is down
    port = free_port()
    down = Smtp(port)  # not started yet: connections are refused
    settings = mail_settings(home, "servers", request, down)
    try:
        email_worker(processes, settings)
        rt = runtimes(settings)
        job, _ = rt.jobs.submit(
            "email_when_complete", {"url": f"{status.base}/job/down?running=0", "address": ADDRESS}
        )

        def send_retried() -> bool:
            steps = {s["name"]: s for s in rt.store.describe(job["id"])["steps"]}
            return steps["send"]["attempts"] >= 2

        # When the send step has failed twice against it
        wait_until(
            send_retried,
            60,
            "the send step to fail twice against a closed port",
            logs=processes.logs,
        )
        assert down.inbox.count() == 0
        # and the server comes up
        down.start()
        detail = wait_for_job(rt, job["id"], 120, logs=processes.logs)
        # Then the job succeeds with exactly one mail sent
        assert detail["status"] == "succeeded"
        assert down.inbox.count() == 1
    finally:
        down.stop()
        delete_queues(settings)


def test_worker_killed_after_sending_before_ack_still_one_email(
    request: pytest.FixtureRequest,
    home: Path,
    smtp: Smtp,
    status: StatusServer,
    processes: Processes,
    runtimes: Callable[[Settings], Runtime],
) -> None:
    # Given a worker that stalls right after the mail is sent and recorded, before
    # the task is acknowledged (the fault plugin picks the moment)
    settings = mail_settings(
        home, "servers", request, smtp, plugins=["tests.integration.plugin_kinds", FAULTS]
    )
    try:
        doomed = email_worker(
            processes, settings, "doomed", {"PRODINF_TEST_PAUSE_AFTER_ONCE": "delivered"}
        )
        rt = runtimes(settings)
        task = rt.celery.tasks["prodinf.email_when_complete"].delay(
            f"{status.base}/job/killed?running=1", ADDRESS
        )
        wait_until(lambda: smtp.inbox.count() == 1, 60, "the email to be sent", logs=processes.logs)
        # The worker has sent the mail and recorded it, and holds the unacknowledged
        # task: kill it there, as a power cut would.
        assert not task.ready()
        # When it is SIGKILLed there and another worker takes the redelivered task
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
        email_worker(processes, settings, "rescuer")
        # Then the task ends, and the mail was still sent once
        result = task.get(timeout=90)
        assert result["to"] == ADDRESS
        assert smtp.inbox.count() == 1, "the redelivered task did not mail again"
    except BaseException:
        print(processes.logs())
        raise
    finally:
        delete_queues(settings)


def test_a_url_that_never_finishes_gets_the_deadline_email(
    servers_mail: Settings, smtp: Smtp, status: StatusServer, processes: Processes
) -> None:
    # Given an email worker and a URL that always says running
    email_worker(processes, servers_mail)
    # When a notification with a 3 s deadline is asked for
    result, _ = python_shell(servers_mail, f"{status.base}/never", ADDRESS, timeout=90, deadline=3)
    # Then one mail says it did not finish, with the last status seen
    assert smtp.inbox.count() == 1, "exactly one email"
    message = smtp.inbox.messages[0]
    assert result["subject"] == message["Subject"]
    assert "did not finish" in message["Subject"]
    text, _ = text_and_html(message)
    assert f"{status.base}/never" in text
    assert "running" in text, "the last status seen is reported"
    assert status.looked("/never") >= 3


def test_a_url_answering_404_forever_gets_the_failure_email(
    servers_mail: Settings, smtp: Smtp, status: StatusServer, processes: Processes
) -> None:
    # Given an email worker and a URL that always answers 404
    email_worker(processes, servers_mail)
    # When a notification allowing 3 errors is asked for
    result, _ = python_shell(
        servers_mail, f"{status.base}/missing", ADDRESS, timeout=90, max_errors=3
    )
    # Then after three looks one mail says it could not be checked, and why
    assert smtp.inbox.count() == 1, "exactly one email"
    message = smtp.inbox.messages[0]
    assert result["subject"] == message["Subject"]
    assert "could not be checked" in message["Subject"]
    text, _ = text_and_html(message)
    assert "404" in text
    assert status.looked("/missing") == 3, "a bounded number of tries"


def test_embedded_defaults_write_to_the_outbox_listed_at_slash_outbox(
    request: pytest.FixtureRequest, home: Path, status: StatusServer, processes: Processes
) -> None:
    # Given embedded defaults (no SMTP server) and an email worker
    settings = mail_settings(home, "embedded", request, None)
    email_worker(processes, settings)
    rt = Runtime(settings, create_celery(settings))
    try:
        # When a notification is asked for and its URL completes
        job, _ = rt.jobs.submit(
            "email_when_complete",
            {"url": f"{status.base}/job/outbox?running=1", "address": ADDRESS},
        )
        detail = wait_for_job(rt, job["id"], 60, logs=processes.logs)
        # Then the mail is written to the outbox, and /outbox lists it
        assert detail["status"] == "succeeded"
        files = list((home / "outbox").glob("*.eml"))
        assert len(files) == 1
        message = email.message_from_bytes(files[0].read_bytes(), policy=default_policy)
        assert message["To"] == ADDRESS
        page = create_app(settings, runtime=rt).test_client().get("/outbox")
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert (
            str(message["Subject"]).replace("&", "&amp;") in html or str(message["Subject"]) in html
        )
    finally:
        rt.close()


@pytest.mark.slow
@pytest.mark.timeout(1200)
class SlowInbox(Inbox):
    """Takes ``delay`` seconds to accept each mail: a delivery that keeps a worker busy."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


def test_a_busy_worker_puts_off_its_looks_and_makes_them_once_idle(
    request: pytest.FixtureRequest,
    home: Path,
    status: StatusServer,
    processes: Processes,
    runtimes: Callable[[Settings], Runtime],
) -> None:
    # Given an email worker whose mail server takes 4 s to accept a mail, and a
    # notification on a URL that never finishes, looked at every 0.3 s
    slow = Smtp(free_port())
    slow.inbox = SlowInbox(4.0)
    slow.start()
    settings = mail_settings(home, "servers", request, slow)
    try:
        email_worker(processes, settings)
        rt = runtimes(settings)
        rt.jobs.submit("email_when_complete", {"url": f"{status.base}/never", "address": ADDRESS})
        wait_until(lambda: status.looked("/never") >= 3, 60, "looks at /never", logs=processes.logs)

        # When an unrelated mail keeps the worker busy for 4 s
        rt.jobs.submit(
            "email_when_complete",
            {"url": f"{status.base}/job/unrelated?running=0", "address": "other@example.org"},
        )
        wait_until(lambda: status.looked("/job/unrelated") == 1, 30, "the unrelated job to start")
        time.sleep(0.5)  # a look under way as it started ends
        during = status.looked("/never")
        wait_until(lambda: slow.inbox.count() == 1, 30, "the unrelated mail", logs=processes.logs)
        after = status.looked("/never")

        # Then the pending URL was not looked at meanwhile (it would have been about
        # ten times), and is looked at again once the worker is idle
        assert after - during <= 1, f"{after - during} looks while the worker was busy"
        wait_until(
            lambda: status.looked("/never") >= after + 3, 30, "looks once the worker is idle"
        )
    finally:
        slow.stop()
        delete_queues(settings)


def test_ten_thousand_pending_notifications_do_not_delay_an_unrelated_email(
    request: pytest.FixtureRequest,
    home: Path,
    smtp: Smtp,
    status: StatusServer,
    processes: Processes,
    runtimes: Callable[[Settings], Runtime],
) -> None:
    """Given 10,000 notifications waiting on a URL that never finishes, looked at every
    20 s by one worker of concurrency 2; when an unrelated email is asked for; then it
    arrives within one poll interval, and the worker's memory stays bounded."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.procstat import tree_rss

    interval = 20.0
    settings = mail_settings(home, "servers", request, smtp, poll_interval=interval)
    try:
        worker = email_worker(processes, settings)
        rt = runtimes(settings)
        first, _ = rt.jobs.submit(
            "email_when_complete", {"url": f"{status.base}/job/first?running=0", "address": ADDRESS}
        )
        wait_for_job(rt, first["id"], 60, logs=processes.logs)
        baseline = tree_rss(worker.pid)

        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: rt.jobs.submit(
                        "email_when_complete",
                        {"url": f"{status.base}/never", "address": f"p{i}@example.org"},
                    ),
                    range(10_000),
                )
            )

        def all_waiting() -> bool:
            with rt.store.session() as session:
                waiting = session.scalar(
                    select(func.count()).select_from(JobRow).where(JobRow.status == "waiting")
                )
            return waiting == 10_000

        wait_until(
            all_waiting,
            900,
            "10,000 notifications to be waiting",
            interval=1,
            logs=processes.logs,
        )
        peak = max(baseline, tree_rss(worker.pid))
        for _ in range(3):  # unrelated emails while the pending ones are looked at
            time.sleep(interval / 2)  # pending ones come due and queue up meanwhile
            before = smtp.inbox.count()
            started = time.monotonic()
            rt.jobs.submit(
                "email_when_complete",
                {
                    "url": f"{status.base}/job/unrelated-{before}?running=0",
                    "address": "other@example.org",
                },
            )
            wait_until(
                lambda b=before: smtp.inbox.count() > b,
                interval,
                "the unrelated email within one poll interval",
                interval=0.05,
            )
            latency = time.monotonic() - started
            assert latency < interval
            peak = max(peak, tree_rss(worker.pid))
        assert status.looked("/never") >= 10_000, "every pending notification looked at least once"
        with rt.store.session() as session:
            ended = session.scalar(
                select(func.count())
                .select_from(JobRow)
                .where(JobRow.status.in_(["failed", "cancelled", "reverted"]))
            )
        assert ended == 0, "the pending notifications are still pending, none failed"
        assert smtp.inbox.count() == 4, "no pending notification mailed anything"
        # Bounded: the worker does not hold the pending notifications in memory.
        assert peak < baseline + 150 * 2**20, (baseline, peak)
    except BaseException:
        print(processes.logs())
        raise
    finally:
        delete_queues(settings)
