"""Recovery in seconds on RabbitMQ + PostgreSQL, with classic and with quorum queues.

Given real worker processes, a real portal and a real SMTP server; when the broker
stops, a worker or the portal is SIGKILLed at the worst moment, or a worker dies
behind a deep queue; then every job moves again within seconds (or within the lease
plus a few seconds), and the figures are in the assertion messages.

Three faults are mocks (``tests/integration/recovery_faults.py``, each named where
used): a process killed between two lines of prodinf (after the reconciler's claim
and before its publish; after a portal's commit and before its publish; after the
SMTP server accepted a mail and before the delivery was recorded). Everything else
is real: ``rabbitmqctl stop_app``, SIGKILL, a queue 500 messages deep.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from kombu import Connection, Queue
from sqlalchemy.engine import make_url

from prodinf.celery_app import DELIVERY_LIMIT, create_celery
from prodinf.config import Settings
from prodinf.runtime import Runtime, dead_letters, lane
from tests.conftest import Processes, env_for
from tests.gates import LOOPBACK, require_rabbitmqctl, skip_or_fail
from tests.integration.conftest import PLUGIN, delete_queues, messages_waiting, stack_settings
from tests.integration.servers import Smtp, StatusServer
from tests.integration.test_email import email_worker
from tests.integration.test_workers import recorded
from tests.loopback import free_port
from tests.waiting import wait_for_job, wait_for_jobs, wait_until

pytestmark = pytest.mark.integration

FAULTS = "tests.integration.recovery_faults"
LEASE = 3.0


@pytest.fixture(params=["classic", "quorum"])
def queue_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(
    request: pytest.FixtureRequest, home: Path, queue_type: str
) -> Iterator[Callable[..., tuple[Settings, Runtime]]]:
    """Settings on RabbitMQ + PostgreSQL with the test kinds and the fault hooks, of the
    test's queue type, and a submitting runtime for them (both cleaned up)."""
    made: list[tuple[Settings, Runtime]] = []

    def build(**overrides: Any) -> tuple[Settings, Runtime]:
        settings = stack_settings(
            home,
            "servers",
            request,
            plugins=[PLUGIN, FAULTS],
            queue_type=queue_type,
            lease_seconds=LEASE,
            **overrides,
        )
        runtime = Runtime(settings, create_celery(settings))
        made.append((settings, runtime))
        return settings, runtime

    yield build
    for settings, runtime in made:
        runtime.close()
        delete_queues(settings)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def history_at(runtime: Runtime, job_id: str, event: str) -> datetime | None:
    """When ``event`` first appears in the job's history."""
    for entry in runtime.store.describe(job_id)["history"]:
        if entry["event"] == event:
            return datetime.fromisoformat(entry["at"])
    return None


def since(moment: float, at: datetime | None) -> float:
    """Seconds from ``moment`` (``time.time()``) to ``at``."""
    assert at is not None
    return at.timestamp() - moment


def test_a_publish_refused_after_a_claim_runs_within_seconds_of_the_brokers_return(
    make: Callable[..., tuple[Settings, Runtime]], processes: Processes
) -> None:
    # Given a worker, and a job whose wait comes due while RabbitMQ is stopped
    settings, runtime = make()
    assert settings.broker_url is not None
    require_rabbitmqctl(settings.broker_url)
    processes.worker(settings, queues=settings.queue_jobs, concurrency=1)
    job, _ = runtime.jobs.submit("it_wait_then", {"interval": 3, "looks": 1})
    wait_until(
        lambda: runtime.store.describe(job["id"])["status"] == "waiting",
        60,
        "the job to wait",
        logs=processes.logs,
    )
    rabbitmqctl("stop_app")
    try:
        # When the reconciler claims it and the broker refuses its message
        wait_until(
            lambda: processes.logs_holding("reconciler stopped after 0 of 1"),
            60,
            "a refused publish",
            logs=processes.logs,
        )
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    back = time.time()

    # Then the job runs within seconds of the broker's return, not redrive_after later
    wait_for_job(runtime, job["id"], 60, logs=processes.logs)
    took = since(back, history_at(runtime, job["id"], "job.succeeded"))
    print(f"job ran {took:.1f} s after the broker came back")
    assert took <= 10, f"the job ran {took:.1f} s after the broker came back"


def test_a_worker_killed_between_claim_and_publish_is_covered_by_another_within_seconds(
    make: Callable[..., tuple[Settings, Runtime]], processes: Processes, tmp_path: Path
) -> None:
    # Given a worker that dies right after its reconciler claims a due job, before it
    # publishes it (a mock: PRODINF_TEST_DIE_AFTER_CLAIM kills it at that line)
    settings, runtime = make(resend_after=4.0)
    marker = tmp_path / "claimed"
    doomed = processes.worker(
        settings,
        queues=settings.queue_jobs,
        pool="solo",
        name="doomed",
        extra_env={"PRODINF_TEST_DIE_AFTER_CLAIM": str(marker)},
    )
    job, _ = runtime.jobs.submit("it_wait_then", {"interval": 2, "looks": 1})

    # When the job's wait comes due and that worker claims it and dies
    wait_until(marker.exists, 60, "the claim and the kill", logs=processes.logs)
    died = time.time()
    doomed.wait(30)
    processes.worker(settings, queues=settings.queue_jobs, name="other")

    # Then another worker's reconciler sends it within resend_after plus seconds
    wait_for_job(runtime, job["id"], 60, logs=processes.logs)
    took = since(died, history_at(runtime, job["id"], "job.succeeded"))
    print(f"job ran {took:.1f} s after the claiming worker died")
    assert took <= 4.0 + 5, f"the job ran {took:.1f} s after the claiming worker died"


def test_a_portal_killed_between_commit_and_publish_then_the_key_retried_runs_the_job(
    make: Callable[..., tuple[Settings, Runtime]], processes: Processes, tmp_path: Path
) -> None:
    # Given a worker, and a portal that dies after committing a job and before sending
    # its message (a mock: PRODINF_TEST_DIE_BEFORE_PUBLISH kills it at that line); the
    # reconciler would send it only a minute later
    settings, runtime = make(resend_after=60.0)
    processes.worker(settings, queues=settings.queue_jobs)
    port = free_port()
    env = env_for(settings, PRODINF_TEST_DIE_BEFORE_PUBLISH=str(tmp_path / "committed"))
    portal_args = [sys.executable, "-m", "prodinf.cli", "portal", "--port", str(port)]
    api = f"http://127.0.0.1:{port}/api/v1/jobs"

    def portal_up() -> bool:
        try:
            return requests.get(api, timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    processes.start(portal_args, env, "portal")
    wait_until(portal_up, 60, "the portal", logs=processes.logs)
    submission = {"kind": "it_noop4", "params": {}, "idempotency_key": "chaos-1"}

    # When a client submits and the portal dies mid-request
    with pytest.raises(requests.ConnectionError):
        requests.post(api, json=submission, timeout=30)
    assert runtime.store.list_jobs()[1] == 1, "the job was committed before the kill"

    # and the client retries with the same key once the portal is back
    processes.start(portal_args, env, "portal")
    wait_until(portal_up, 60, "the portal again", logs=processes.logs)
    retried = time.time()
    again = requests.post(api, json=submission, timeout=30)

    # Then it is told about the same job, whose message went out then: it runs at once
    assert again.status_code == 200, again.text
    job_id = again.json()["id"]
    wait_for_job(runtime, job_id, 60, logs=processes.logs)
    took = since(retried, history_at(runtime, job_id, "step.started"))
    print(f"job started {took:.1f} s after the retried submission")
    assert took <= 5, f"the job started {took:.1f} s after the retried submission"


def test_a_worker_killed_mid_step_behind_500_queued_jobs_is_taken_over_within_the_lease(
    make: Callable[..., tuple[Settings, Runtime]], processes: Processes, tmp_path: Path
) -> None:
    # Given a worker running a long step
    settings, runtime = make()
    effects = tmp_path / "effects.txt"
    doomed = processes.worker(settings, queues=settings.queue_jobs, concurrency=1, name="doomed")
    long, _ = runtime.jobs.submit("it_effect", {"effect_file": str(effects), "sleep": 20})
    wait_until(
        lambda: recorded(runtime, long["id"], "effect"),
        60,
        "the long step to start",
        logs=processes.logs,
    )
    # and 500 new jobs queued, with another worker busy with them
    rescuer = processes.worker(settings, queues=settings.queue_jobs, name="rescuer")
    queued = [runtime.jobs.submit("it_noop4", {"sleep": 0.02})[0]["id"] for _ in range(500)]
    wait_until(
        lambda: runtime.store.counts().get("succeeded", 0) >= 1,
        60,
        "the other worker to take jobs",
        logs=processes.logs,
    )
    waiting = sum(1 for j in queued if runtime.store.describe(j)["status"] == "queued")
    assert waiting >= 400, f"only {waiting} jobs were still queued"

    # When the worker holding the step is SIGKILLed
    os.killpg(doomed.pid, signal.SIGKILL)
    killed = time.time()
    doomed.wait()

    # Then the other worker takes the step over within the lease plus 5 s, although
    # hundreds of new jobs are ahead of it in the queue
    wait_until(
        lambda: history_at(runtime, long["id"], "step.resumed") is not None,
        LEASE + 30,
        "the step to be taken over",
        logs=processes.logs,
    )
    took = since(killed, history_at(runtime, long["id"], "step.resumed"))
    still = sum(1 for j in queued if runtime.store.describe(j)["status"] == "queued")
    print(f"taken over {took:.1f} s after the kill, {still} jobs queued")
    assert took <= LEASE + 5, f"taken over {took:.1f} s after the kill ({still} jobs queued)"
    assert still >= 100, f"the queue had drained ({still} left): the test proved nothing"
    assert effects.read_text().splitlines() == [long["id"]]  # the effect was not repeated
    os.killpg(rescuer.pid, signal.SIGKILL)


def test_due_waits_are_not_starved_by_2000_new_jobs(
    make: Callable[..., tuple[Settings, Runtime]], processes: Processes
) -> None:
    # Given 2,000 new jobs flowing in, and two workers started once 1,000 are queued
    # (so the queue is deep while the waits look, however fast the machine submits)
    settings, runtime = make()
    flood_errors: list[BaseException] = []
    submitted = [0]

    def flood() -> None:
        try:
            for _ in range(2000):
                runtime.jobs.submit("it_noop4", {"sleep": 0.02})
                submitted[0] += 1
        except BaseException as exc:  # said below, not lost with the thread
            flood_errors.append(exc)
            raise

    flooding = threading.Thread(target=flood, daemon=True)
    flooding.start()
    wait_until(lambda: submitted[0] >= 1000 or flood_errors, 120, "1,000 new jobs queued")
    assert flood_errors == [], f"the flood of new jobs failed: {flood_errors!r}"
    for name in ("one", "two"):
        processes.worker(settings, queues=settings.queue_jobs, name=name)

    # When 200 jobs, started over 5 s as waits are in use, each wait 5 s twice while
    # hundreds of new jobs are queued
    # (the new jobs still queued, counted every 0.25 s while the waits look)
    depths: list[int] = []
    looking = threading.Event()

    def count_queued() -> None:
        while not looking.wait(0.25):
            depths.append(runtime.store.counts().get("queued", 0))

    counting = threading.Thread(target=count_queued, daemon=True)
    counting.start()
    waits = []
    for _ in range(200):
        waits.append(runtime.jobs.submit("it_wait_then", {"interval": 5, "looks": 2})[0]["id"])
        time.sleep(0.025)
    time.sleep(2 * 5)  # the last wait's two looks are due by now
    looking.set()
    counting.join(10)

    # Then every wait's looks came at most 5 s after they were due
    statuses = wait_for_jobs(runtime, waits, 240, logs=processes.logs)
    assert statuses == ["succeeded"] * 200, processes.logs()
    late = [x for j in waits for x in runtime.store.describe(j)["result"]["late"]]
    queued = min(depths)
    flooding.join(120)
    print(f"looks late: max {max(late):.2f} s, {len(late)} looks; {queued}+ jobs queued meanwhile")
    assert max(late) <= 5, f"latest look {max(late):.1f} s late; {queued}+ jobs queued"
    assert flood_errors == [], f"the flood of new jobs failed: {flood_errors!r}"
    assert queued >= 100, f"only {queued} jobs were queued at times: the test proved nothing"


def postgresql(action: str) -> None:
    """``pg_ctlcluster <version> main <action>``: stop or start this machine's PostgreSQL."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, "-m", "fast"]
        if action == "stop"
        else ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def require_pg_ctlcluster(url: str) -> None:
    """Skip (laptop) or fail (CI) unless this machine's PostgreSQL can be stopped and
    started with ``pg_ctlcluster``."""
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        skip_or_fail("pg_ctlcluster is not installed", "install postgresql to run this test")
    if make_url(url).host not in LOOPBACK:
        skip_or_fail("PostgreSQL is not on this machine", "pg_ctlcluster stops a local one")


def test_work_resumes_within_the_lease_once_the_store_is_back(
    make: Callable[..., tuple[Settings, Runtime]], processes: Processes
) -> None:
    # Given a worker running ten jobs on this machine's PostgreSQL
    settings, runtime = make()
    require_pg_ctlcluster(settings.store_url)
    processes.worker(settings, queues=settings.queue_jobs)
    jobs = [runtime.jobs.submit("it_noop4", {"sleep": 0.5})[0]["id"] for _ in range(10)]
    wait_until(
        lambda: runtime.store.counts().get("running", 0) >= 1,
        60,
        "the jobs to run",
        logs=processes.logs,
    )

    # When PostgreSQL stops for 8 s while they run
    runtime.store.dispose()
    postgresql("stop")
    try:
        time.sleep(8)
    finally:
        postgresql("start")
    back = time.time()

    # Then every job ends, succeeded, within the lease plus a few seconds of its return
    statuses = wait_for_jobs(runtime, jobs, 120, logs=processes.logs)
    took = max(since(back, history_at(runtime, j, "job.succeeded")) for j in jobs)
    print(f"all ten ended {took:.1f} s after the store came back")
    assert statuses == ["succeeded"] * 10, processes.logs()
    assert took <= LEASE + 10, f"the last job ended {took:.1f} s after the store came back"


def test_a_worker_killed_after_the_smtp_server_accepted_sends_the_same_message_id_again(
    make: Callable[..., tuple[Settings, Runtime]],
    processes: Processes,
    smtp: Smtp,
    status: StatusServer,
    tmp_path: Path,
) -> None:
    # Given an email worker whose process dies after the SMTP server accepted a mail and
    # before the delivery was recorded (a mock: PRODINF_TEST_DIE_BEFORE_RECORD), the one
    # window SMTP leaves open
    settings, runtime = make(smtp_host="127.0.0.1", smtp_port=smtp.port, poll_interval=0.3)
    marker = tmp_path / "accepted"
    email_worker(processes, settings, extra_env={"PRODINF_TEST_DIE_BEFORE_RECORD": str(marker)})
    job, _ = runtime.jobs.submit(
        "email_when_complete",
        {"url": f"{status.base}/job/kill?running=0", "address": "ops@example.org"},
    )

    # When the job runs to its end
    wait_until(marker.exists, 60, "the kill after acceptance", logs=processes.logs)
    assert wait_for_job(runtime, job["id"], 60, logs=processes.logs)["status"] == "succeeded"

    # Then the mail went twice, with the same Message-ID (so a deduplicating mail system
    # shows it once), and the job records that Message-ID
    ids = [m["Message-ID"] for m in smtp.inbox.messages]
    assert len(ids) == 2 and ids[0] == ids[1], ids
    assert runtime.store.describe(job["id"])["result"]["message_id"] == ids[0]


@pytest.mark.parametrize("queue_type", ["quorum"])  # only quorum queues have a limit
def test_a_message_past_the_quorum_delivery_limit_is_sent_again_not_dropped(
    make: Callable[..., tuple[Settings, Runtime]], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a job's message on a quorum queue
    settings, runtime = make()
    assert settings.broker_url is not None
    runtime.drain_dead_letters()  # what a worker's first reconciler pass does
    job, _ = runtime.jobs.submit("it_noop4", {})

    # When it is delivered and returned unacknowledged more often than the delivery
    # limit allows (what workers killed while running it do)
    deliveries = 0
    with Connection(settings.broker_url) as conn:
        jobs = Queue(settings.queue_jobs, channel=conn.default_channel)
        while (message := jobs.get(no_ack=False)) is not None and deliveries < 100:
            deliveries += 1
            message.reject(requeue=True)
    assert deliveries == DELIVERY_LIMIT + 1, "RabbitMQ dead-lettered it after the limit"

    # Then the reconciler finds it in the dead letters and sends the job again on the
    # lane, saying so
    wait_until(
        lambda: messages_waiting(settings)[dead_letters(settings)] == 1, 10, "the dead letter"
    )
    assert runtime.drain_dead_letters() == 1
    waiting = messages_waiting(settings)
    assert (waiting[settings.queue_jobs], waiting[lane(settings.queue_jobs)]) == (0, 1)
    assert f"job {job['id']}: its message was delivered" in caplog.text
