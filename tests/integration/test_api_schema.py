"""schemathesis over the API's own OpenAPI document, with every check.

Given the portal on RabbitMQ + PostgreSQL served over real HTTP on loopback, when
schemathesis (``schemathesis run --checks all``: its examples, coverage, fuzzing and
stateful phases) sends valid and invalid requests to every operation of
``/api/v1/swagger.json``, then no check fails: no 5xx; only documented statuses,
content types and headers; bodies matching their schemas; invalid input refused with
a 4xx and valid input accepted; a 405 naming what is allowed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.store.users import Users
from tests.integration.browser import serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Test cases per operation in the fuzzing phase: enough to find a loose document, few
#: enough for the whole run to take about a minute.
MAX_EXAMPLES = 10
#: What schemathesis is told besides: the limits of what OpenAPI 2 can say (read it).
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture
def schema_app(servers: Settings) -> Iterator[Flask]:
    """The portal on RabbitMQ + PostgreSQL (a fresh store, queues no other test uses),
    with authentication on."""
    secured = servers.model_copy(update={"auth": "users"})
    runtime = Runtime(secured, create_celery(secured))
    yield create_app(secured, runtime=runtime)
    runtime.close()


@pytest.fixture
def api_headers(schema_app: Flask) -> dict[str, str]:
    """The headers every request schemathesis sends carries: an operator's token."""
    users = Users(schema_app.extensions["prodinf"].store)
    users.add("ola", "operator")
    token, _ = users.create_token("ola", note="schemathesis")
    return {"Authorization": f"Bearer {token}"}


def test_every_operation_passes_every_check(
    schema_app: Flask, api_headers: dict[str, str], tmp_path: Path
) -> None:
    command = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert command, "schemathesis is installed with the test extras"
    for base in serve(schema_app):
        args = [
            command,
            "--config-file",
            str(CONFIG),
            "run",
            f"{base}/api/v1/swagger.json",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            "14",
            "--workers",
            "1",
            "--max-failures",
            "20",
            "--warnings",
            "off",
        ]
        for name, value in api_headers.items():
            args += ["--header", f"{name}: {value}"]
        # In tmp_path: schemathesis keeps its example database in the working folder.
        done = subprocess.run(
            args, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
        )
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-3000:]
