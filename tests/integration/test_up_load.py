"""5,000 jobs through ``prodinf up`` on the embedded broker, every worker busy.

Given ``prodinf up`` on embedded defaults (the filesystem broker, a SQLite store),
when 5,000 jobs are posted to its API from eight threads at once, spread over the
four queues so that every worker is busy; then every job succeeds, every process of
each worker's pool takes its share, no worker crashes or is restarted (kombu's
filesystem transport let a worker read a message file before it was whole:
``JSONDecodeError``, the worker gone, its message lost), and no job waited for the
reconciler to send its message again.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.integration.up import Up, running_up
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
JOBS = 5_000
QUEUES = ("handover", "event", "email", "jobs")


@pytest.fixture
def up(home: Path, tmp_path: Path) -> Iterator[Up]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODINF_")}
    env.update(
        PRODINF_HOME=str(home),
        PRODINF_PLUGINS="tests.integration.plugin_kinds",
        PYTHONPATH=str(ROOT),
        COLUMNS="300",
    )
    with running_up(env, tmp_path, home, tmp_path / "up.out") as running:
        yield running


@pytest.mark.timeout(900)  # past the wait below, so a slow run fails saying how far it got
def test_five_thousand_jobs_with_every_worker_busy_lose_nothing(up: Up) -> None:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=8)
    session.mount("http://", adapter)

    def post(n: int) -> str:
        kind = f"it_busy_{QUEUES[n % len(QUEUES)]}"
        answer = session.post(f"{up.url}/api/v1/jobs", json={"kind": kind}, timeout=60)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(post, range(JOBS)))
    assert len(set(ids)) == JOBS

    succeeded = [0]

    def all_done() -> bool:
        found = session.get(f"{up.url}/api/v1/jobs?status=succeeded&limit=1", timeout=30)
        succeeded[0] = found.json()["total"]
        return succeeded[0] == JOBS

    wait_until(
        all_done,
        600,
        lambda: f"all 5,000 jobs to succeed ({succeeded[0]} have)",
        interval=2.0,
        logs=up.logs,
    )

    output = up.output()
    logs = output + "".join(
        log.read_text(errors="replace") for log in sorted((up.home / "logs").glob("*.log"))
    )
    for crash in ("Unrecoverable error", "JSONDecodeError", "restarting", "Traceback"):
        assert crash not in logs, logs[-5000:]
    # neither a worker's reconciler thread nor the scheduler's passes sent a job again
    assert not re.search(r"reconciler published \d+ due job", logs), logs[-5000:]
    passes = re.findall(r"Task prodinf\.reconcile\[[^]]+\] succeeded in \S+: (\d+)", logs)
    assert passes and set(passes) == {"0"}, passes
    # every worker took its share, and so did every process of its pool (one forked
    # while a thread of the worker wrote to the store used to fail every job it took,
    # for minutes, while its sibling ran them all)
    for queue in QUEUES:
        worker_log = (up.home / "logs" / f"worker-{queue}.log").read_text(errors="replace")
        assert worker_log.count("succeeded in") >= JOBS // len(QUEUES), queue
        ran = Counter(
            re.findall(
                r"/(ForkPoolWorker-\d+)\] Task prodinf\.run_job\[[^]]+\] succeeded", worker_log
            )
        )
        assert len(ran) == 2, (queue, ran)  # prodinf up's default concurrency
        assert min(ran.values()) >= JOBS // len(QUEUES) // 10, (queue, ran)
