"""The Ensembl snippet on a prodinf job: ``email_when_complete.delay(<job url>?format=email,
address)``, on RabbitMQ + PostgreSQL with a real SMTP server (aiosmtpd).

Given the portal serving over real HTTP, a worker per queue and a job that runs a few
seconds; when a Python shell asks, as the Ensembl documentation does, to be mailed
when that job's URL (with ``?format=email``) is done; then the mail arrives within 2 s
of the job's end, although looks at URLs are a minute apart: the job's end wakes the
notification. Its subject and body are what ``?format=email`` answers.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
import requests

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from tests.conftest import Processes, env_for
from tests.integration.browser import serve
from tests.integration.conftest import delete_queues, stack_settings
from tests.integration.servers import Smtp
from tests.waiting import wait_for_job, wait_until

pytestmark = pytest.mark.integration

ADDRESS = "producer@example.org"
#: The snippet of the Ensembl production documentation, with a prodinf job's URL.
ENSEMBL_SNIPPET = """
import sys
from prodinf.email_tasks import email_when_complete
email_when_complete.delay(sys.argv[1], sys.argv[2])
"""


@pytest.fixture
def stack(request: pytest.FixtureRequest, home: Path, smtp: Smtp) -> Iterator[Settings]:
    """RabbitMQ + PostgreSQL, mail to the test's SMTP server, URLs looked at a minute apart."""
    settings = stack_settings(
        home, "servers", request, smtp_host="127.0.0.1", smtp_port=smtp.port, poll_interval=60.0
    )
    yield settings
    delete_queues(settings)


def lines(text: str) -> list[str]:
    """The lines of a text, as a mail reader shows them (line ends and trailing spaces
    are the transport's)."""
    return [line.rstrip() for line in text.strip().splitlines()]


def test_the_ensembl_snippet_on_a_prodinf_job_mails_within_two_seconds_of_its_end(
    stack: Settings, smtp: Smtp, processes: Processes
) -> None:
    rt = Runtime(stack, create_celery(stack))
    try:
        for queue in ("jobs", "email"):
            processes.worker(stack, queues=stack.queue_for(queue), name=queue)
        with contextmanager(serve)(create_app(stack, runtime=rt)) as url:
            # Given a job that runs for about three seconds
            effect = Path(stack.home) / "effect.txt"
            job, _ = rt.jobs.submit("it_effect", {"effect_file": str(effect), "sleep": 3.0})
            job_url = f"{url}/api/v1/jobs/{job['id']}?format=email"

            # When a Python shell asks to be mailed when the job's URL is done
            shell = subprocess.run(
                [sys.executable, "-c", ENSEMBL_SNIPPET, job_url, ADDRESS],
                env=env_for(stack),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert shell.returncode == 0, shell.stderr

            # Then the job succeeds, and one mail arrives within 2 s of its end
            detail = wait_for_job(rt, job["id"], 90, logs=processes.logs)
            assert detail["status"] == "succeeded", processes.logs()
            wait_until(lambda: smtp.inbox.count() >= 1, 30, "the mail", logs=processes.logs)
            ended = datetime.fromisoformat(detail["finished_at"]).timestamp()
            late = smtp.inbox.arrived[0] - ended
            print(f"the mail came {late:.3f} s after the job's end")
            assert late <= 2.0, f"the mail came {late:.2f} s after the job's end"

            # with what ?format=email answers for the job, and nothing else
            summary = requests.get(job_url, timeout=10).json()
            assert summary["status"] == "succeeded"
            [message] = smtp.inbox.messages
            assert message["To"] == ADDRESS
            assert message["Subject"] == summary["subject"]
            text = message.get_body(("plain",))
            assert text is not None
            assert lines(text.get_content()) == lines(summary["body"])
            assert f"{url}/jobs/{job['id']}" in summary["body"]
    finally:
        rt.close()
