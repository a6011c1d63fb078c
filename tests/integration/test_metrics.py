"""``/metrics`` of real processes: the portal and the workers sharing one folder of counts
on RabbitMQ + PostgreSQL, gunicorn's worker processes adding up, ``prodinf up``, and a
worker serving its own port.

Each scrape is read with prometheus_client's own parser, as Prometheus reads it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.runtime import Runtime
from prodinf.status import TERMINAL
from tests.conftest import Processes, env_for
from tests.integration.up import running_up
from tests.loopback import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of ``GET <url>``, parsed as Prometheus parses it."""
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200, answer.text
    found: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def answering(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except (requests.ConnectionError, requests.Timeout):  # still starting, or busy starting
        return False


def submit(base: str, kind: str, params: dict[str, Any] | None = None) -> str:
    made = requests.post(f"{base}/api/v1/jobs", json={"kind": kind, "params": params or {}},
                         timeout=30)  # fmt: skip
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def ended(base: str, job_ids: list[str]) -> dict[str, str] | None:
    """Each job's status once every one has ended, else None."""
    statuses = {
        job: requests.get(f"{base}/api/v1/jobs/{job}", timeout=30).json()["status"]
        for job in job_ids
    }
    return statuses if all(s in TERMINAL for s in statuses.values()) else None


def serve_portal(processes: Processes, env: dict[str, str], port: int) -> str:
    """``prodinf portal`` as a process; its base URL once it answers."""
    processes.start([sys.executable, "-m", "prodinf.cli", "portal", "--port", str(port)], env,
                    "portal")  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: answering(f"{base}/health"), 60, "the portal", logs=processes.logs)
    return base


def test_the_portal_and_the_workers_counts_in_one_scrape(
    servers: Settings, processes: Processes, tmp_path: Path
) -> None:
    """Given a portal and a worker (2 pool processes) on RabbitMQ + PostgreSQL sharing a
    folder of counts, when jobs succeed, retry, fail and revert, and two wait on a queue
    no worker consumes, then one scrape of the portal holds exactly what each process
    counted, histograms counting every run, and RabbitMQ's messages and consumers."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = env_for(servers, PROMETHEUS_MULTIPROC_DIR=str(folder))
    processes.worker(servers, queues=servers.queue_jobs, concurrency=2,
                     extra_env={"PROMETHEUS_MULTIPROC_DIR": str(folder)})  # fmt: skip
    base = serve_portal(processes, env, free_port())

    cause = tmp_path / "cause"
    cause.write_text("bad input")
    jobs = [submit(base, "it_noop4") for _ in range(3)]
    jobs += [submit(base, "it_flaky"), submit(base, "it_fail")]
    jobs.append(submit(base, "it_revert", {"log_file": str(tmp_path / "log"),
                                           "cause_file": str(cause)}))  # fmt: skip
    for _ in range(2):
        submit(base, "it_busy_email")  # no worker consumes the email queue
    statuses = wait_until(lambda: ended(base, jobs), 120, "the jobs to end", logs=processes.logs)
    assert list(statuses.values()) == ["succeeded"] * 4 + ["failed", "reverted"]

    def with_the_worker() -> Samples | None:  # it says it is alive as it starts
        found = scrape(f"{base}/metrics")
        return found if value(found, "prodinf_workers_alive", queue=servers.queue_jobs) else None

    samples = wait_until(with_the_worker, 30, "the worker in the store")

    # the portal's counts
    submitted = {"it_noop4": 3, "it_flaky": 1, "it_fail": 1, "it_revert": 1, "it_busy_email": 2}
    for kind, count in submitted.items():
        assert value(samples, "prodinf_jobs_submitted_total", kind=kind) == count, kind
    # the worker's pool's counts
    finished = {("it_noop4", "succeeded"): 3, ("it_flaky", "succeeded"): 1,
                ("it_fail", "failed"): 1, ("it_revert", "reverted"): 1}  # fmt: skip
    for (kind, status), count in finished.items():
        assert value(samples, "prodinf_jobs_finished_total", kind=kind, status=status) == count
        assert value(samples, "prodinf_job_duration_seconds_count", kind=kind) == count
    runs = {
        **{("it_noop4", f"s{i}", "succeeded"): 3 for i in range(4)},
        ("it_flaky", "call", "retried"): 1,
        ("it_flaky", "call", "succeeded"): 1,
        ("it_fail", "check", "failed"): 1,
        **{("it_revert", step, "succeeded"): 1 for step in ("prepare", "copy", "register")},
        ("it_revert", "check", "failed"): 1,
        ("it_revert", "register", "reverted"): 1,
        ("it_revert", "copy", "reverted"): 1,
    }
    counted = {
        (labels["kind"], labels["step"], labels["outcome"]): v
        for (name, pairs), v in samples.items()
        if name == "prodinf_steps_total" and (labels := dict(pairs))["kind"] in submitted
    }
    assert counted == runs
    for kind, step in {(k, s) for k, s, _ in runs}:
        ran = sum(n for (k, s, _), n in runs.items() if (k, s) == (kind, step))
        took = value(samples, "prodinf_step_duration_seconds_count", kind=kind, step=step)
        assert took == ran, (kind, step)
    # six jobs started from the queue, and the retry once it came due
    assert value(samples, "prodinf_schedule_to_start_seconds_count", queue=servers.queue_jobs) == 7
    # written by more than one process: the portal and the pool's
    assert len({p.name.split("_")[-1] for p in folder.glob("counter_*.db")}) >= 2

    # the store's and RabbitMQ's gauges
    email, jobs_queue = servers.queue_email, servers.queue_jobs
    assert value(samples, "prodinf_jobs_active", kind="it_busy_email", status="queued") == 2
    assert (value(samples, "prodinf_oldest_queued_job_age_seconds", queue=email) or 0) > 0
    assert value(samples, "prodinf_queue_messages", queue=email) == 2
    assert value(samples, "prodinf_queue_consumers", queue=email) == 0
    assert value(samples, "prodinf_queue_consumers", queue=jobs_queue) == 1
    assert value(samples, "prodinf_queue_consumers", queue=f"{jobs_queue}.due") == 1
    assert value(samples, "prodinf_queue_messages", queue=jobs_queue) == 0
    assert value(samples, "prodinf_workers_alive", queue=email) == 0
    assert value(samples, "prodinf_broker_up") == 1
    assert value(samples, "prodinf_store_up") == 1


def submitted_by_process(folder: Path) -> dict[int, float]:
    """pid -> the jobs it counted as submitted, from each process's own file."""
    found: dict[int, float] = {}
    for path in folder.glob("counter_*.db"):
        for family in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in family.samples:
                if sample.name == "prodinf_jobs_submitted_total":
                    pid = int(path.stem.split("_")[-1])
                    found[pid] = found.get(pid, 0) + sample.value
    return found


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


@pytest.fixture
def gunicorn(servers: Settings, processes: Processes) -> Iterator[tuple[str, int]]:
    """The portal under gunicorn, 3 worker processes, with prodinf's gunicorn config and
    no PROMETHEUS_MULTIPROC_DIR (the folder is PRODINF_HOME/metrics); its URL and the
    master's pid."""
    port = free_port()
    env = env_for(servers)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    master = processes.start(
        [sys.executable, "-m", "gunicorn", "-c", "python:prodinf.gunicorn_config", "-w", "3",
         "-b", f"127.0.0.1:{port}", "prodinf.wsgi:app"],
        env,
        "gunicorn",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: answering(f"{base}/health") and len(children(master.pid)) == 3, 60,
               "gunicorn's 3 workers", logs=processes.logs)  # fmt: skip
    yield base, master.pid


def test_gunicorn_worker_processes_add_up_in_one_scrape(
    servers: Settings, gunicorn: tuple[str, int], processes: Processes
) -> None:
    """Given the portal under gunicorn with 3 worker processes, when submissions are
    spread over all three (each process counted some, in its own file), then any one
    scrape holds their sum; and when a worker process is killed and replaced, what it
    counted is still in the sum."""
    base, master = gunicorn
    folder = servers.home / "metrics"
    made = 0

    def spread() -> bool:
        nonlocal made
        with ThreadPoolExecutor(max_workers=9) as pool:
            made += sum(1 for _ in pool.map(lambda _: submit(base, "it_noop4"), range(18)))
        return len(submitted_by_process(folder)) == 3

    wait_until(spread, 60, "submissions taken by each of the 3 processes", interval=0)
    counts = submitted_by_process(folder)
    assert set(counts) == children(master) and sum(counts.values()) == made

    for _ in range(3):  # whichever process answers, the same sum
        assert value(scrape(f"{base}/metrics"), "prodinf_jobs_submitted_total",
                     kind="it_noop4") == made  # fmt: skip

    victim = max(counts)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in children(master) and len(children(master)) == 3, 60,
               "gunicorn to replace the killed worker", logs=processes.logs)  # fmt: skip
    submit(base, "it_noop4")
    samples = scrape(f"{base}/metrics")
    assert value(samples, "prodinf_jobs_submitted_total", kind="it_noop4") == made + 1
    assert value(samples, "prodinf_jobs_active", kind="it_noop4", status="queued") == made + 1


def test_prodinf_up_serves_its_workers_counts(home: Path, tmp_path: Path) -> None:
    """Given ``prodinf up`` on embedded defaults, when jobs run on its workers, then its
    portal's /metrics holds the jobs it took and the steps its workers ran; a folder
    left by an earlier run is emptied as it starts."""
    stale = home / "metrics"
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"\0" * 16)  # an earlier run's
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRODINF_", "PROMETHEUS_"))}
    env.update(PRODINF_HOME=str(home), PRODINF_PLUGINS="tests.integration.plugin_kinds",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]),  # the test kinds
               PRODINF_METRICS_PORT=str(free_port()))  # fmt: skip
    with running_up(env, tmp_path, home, tmp_path / "up.out") as up:
        jobs = [submit(up.url, "it_noop4") for _ in range(2)]
        wait_until(lambda: ended(up.url, jobs), 120, "the jobs to end", logs=up.logs)
        samples = scrape(f"{up.url}/metrics")
        assert not (stale / "counter_1.db").exists()
    assert value(samples, "prodinf_jobs_submitted_total", kind="it_noop4") == 2
    assert value(samples, "prodinf_jobs_finished_total", kind="it_noop4", status="succeeded") == 2
    for step in ("s0", "s1", "s2", "s3"):
        assert value(samples, "prodinf_steps_total", kind="it_noop4", step=step,
                     outcome="succeeded") == 2  # fmt: skip
    assert value(samples, "prodinf_schedule_to_start_seconds_count", queue="jobs") == 2


def test_a_worker_serves_its_own_counts_on_its_port(
    servers: Settings, processes: Processes
) -> None:
    """Given a worker started with PRODINF_METRICS_PORT (a machine without the portal),
    when a job runs on it, then its port serves its pool's counts, which it keeps in a
    folder of its own."""
    settings = servers
    port = free_port()
    # Celery orders a worker's steps by their names' hashes: with this seed its pool
    # starts (forks) before prodinf's steps do, as it may in any run.
    extra = {"PRODINF_METRICS_PORT": str(port), "PYTHONHASHSEED": "1"}
    processes.worker(settings, queues=settings.queue_jobs, name="own", extra_env=extra)
    url = f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: answering(url), 60, "the worker's metrics port", logs=processes.logs)
    rt = Runtime(settings, create_celery(settings))
    try:
        job, _ = rt.jobs.submit("it_noop4", {})
        wait_until(lambda: rt.store.describe(job["id"])["status"] in TERMINAL, 60,
                   "the job to end", logs=processes.logs)  # fmt: skip
    finally:
        rt.close()
    samples = scrape(url)
    assert value(samples, "prodinf_steps_total", kind="it_noop4", step="s0",
                 outcome="succeeded") == 1  # fmt: skip
    assert value(samples, "prodinf_jobs_finished_total", kind="it_noop4", status="succeeded") == 1
    assert value(samples, "prodinf_jobs_submitted_total", kind="it_noop4") is None  # not its
    assert value(samples, "prodinf_store_up") is None  # the portal's
    own = [p for p in (settings.home / "metrics").iterdir() if p.is_dir()]
    assert len(own) == 1 and own[0].name.startswith("own-")
    assert list(own[0].glob("counter_*.db"))
