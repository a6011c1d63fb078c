"""Whether a test may run here: the real servers and programs it needs, and what to do
without them. On a laptop a test skips and says what to start or install; with ``CI``
set (to a true value) it fails instead, so CI can never pass by skipping."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

__all__ = [
    "AMQP_URL",
    "CI",
    "MYSQL_URL",
    "POSTGRES_URL",
    "need",
    "reachable",
    "require",
    "require_rabbitmqctl",
    "skip_or_fail",
    "truthy",
]


def truthy(value: str | None) -> bool:
    """``true``, ``1`` or ``yes`` in any case; anything else (``false``, ``0``, empty) is not."""
    return (value or "").strip().lower() in {"true", "1", "yes"}


#: Set in CI: a test that cannot run fails instead of skipping.
CI = truthy(os.environ.get("CI"))

POSTGRES_URL = os.environ.get(
    "PRODINF_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/prodinf_test"
)
MYSQL_URL = os.environ.get(
    "PRODINF_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/prodinf_test"
)
AMQP_URL = os.environ.get("PRODINF_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def skip_or_fail(reason: str, remedy: str) -> NoReturn:
    """Skip saying ``reason`` and ``remedy`` (laptop), or fail saying ``reason`` (CI)."""
    if CI:
        pytest.fail(f"{reason}, and CI is set: this test must run here")
    pytest.skip(f"{reason}; {remedy}")


def reachable(url: str) -> bool:
    parts = urlsplit(url.replace("+psycopg", "").replace("+pymysql", ""))
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2):
            return True
    except OSError:
        return False


def require(name: str, url: str) -> None:
    """Skip (laptop) or fail (CI) unless the server behind ``url`` answers."""
    if not reachable(url):
        where = urlsplit(url).netloc.split("@")[-1]
        skip_or_fail(f"{name} is not reachable at {where}", "start it to run this test")


def need(binary: str, package: str) -> None:
    """Skip (laptop) or fail (CI) unless the program ``binary`` is installed."""
    if not Path(binary).exists():
        skip_or_fail(f"{binary} is not installed", f"apt-get install {package}")


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def require_rabbitmqctl(amqp_url: str) -> None:
    """Skip (laptop) or fail (CI) unless ``rabbitmqctl`` can drive the broker at
    ``amqp_url``: the tool is installed, the broker runs on this machine, and the tool
    may talk to it (it needs the broker's Erlang cookie)."""
    require("RabbitMQ", amqp_url)
    if shutil.which("rabbitmqctl") is None:
        skip_or_fail("rabbitmqctl is not installed", "install rabbitmq-server to run this test")
    host = urlsplit(amqp_url).hostname
    if host not in LOOPBACK:
        skip_or_fail(
            f"RabbitMQ at {host} is not on this machine",
            "rabbitmqctl restarts a local broker only",
        )
    done = subprocess.run(
        ["rabbitmqctl", "-q", "status"], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        skip_or_fail(
            f"rabbitmqctl cannot talk to the local RabbitMQ: {done.stderr.strip()[-300:]}",
            "run the tests as a user that may use rabbitmqctl",
        )
