"""Stacks for the integration tier: embedded (filesystem broker + SQLite) and servers
(RabbitMQ + PostgreSQL), with queues no other test uses and the test kinds loaded."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from amqp.exceptions import NotFound
from flask import Flask
from kombu import Connection
from sqlalchemy.engine import make_url

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.runtime import Runtime, dead_letters, lane
from tests.conftest import fresh_store
from tests.integration.browser import WebDriver, driven_chromium, serve
from tests.integration.core_faults import mariadb_user, postgres_role
from tests.integration.datasets import core_db, datasets, make_core_db
from tests.integration.servers import Smtp
from tests.loopback import free_port

# fixtures for the database kinds
__all__ = ["core_db", "datasets", "make_core_db", "mariadb_user", "postgres_role"]

PLUGIN = "tests.integration.plugin_kinds"
#: The database the servers stack uses (dropped and migrated anew by each test).
IT_DATABASE = os.environ.get("PRODINF_TEST_IT_DATABASE", "prodinf_it")


def stack_settings(
    home: Path, kind: str, request: pytest.FixtureRequest, **overrides: object
) -> Settings:
    values: dict[str, object] = {
        "home": home,
        "reconcile_interval": 0.3,
        "lease_seconds": 3.0,
        "redrive_after": 10.0,
        "plugins": [PLUGIN],
        "worker_concurrency": 2,
        # every test folder of the session: this test's and the shared sample databases'
        "sqlite_roots": [request.getfixturevalue("tmp_path_factory").getbasetemp()],
    }
    if kind == "servers":
        amqp = request.getfixturevalue("amqp_url")
        pg = make_url(request.getfixturevalue("postgres_url")).set(database=IT_DATABASE)
        url = pg.render_as_string(hide_password=False)
        fresh_store(url).dispose()
        queues = request.getfixturevalue("unique_queues")
        # RabbitMQ keeps unacknowledged messages, so only the embedded broker needs the
        # reconciler's short redrive to recover a message a killed worker had taken.
        values.update(
            database_url=url,
            broker_url=amqp,
            redrive_after=300.0,
            **{k.removeprefix("PRODINF_").lower(): v for k, v in queues.items()},
        )
    else:
        fresh_store(Settings(home=home).store_url).dispose()
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(params=["embedded", "servers"])
def stack(request: pytest.FixtureRequest, home: Path) -> Iterator[Settings]:
    """Settings for a whole prodinf on embedded defaults, then on RabbitMQ + PostgreSQL."""
    settings = stack_settings(home, request.param, request)
    yield settings
    delete_queues(settings)


@pytest.fixture
def servers(request: pytest.FixtureRequest, home: Path) -> Iterator[Settings]:
    """Settings for a prodinf on RabbitMQ + PostgreSQL."""
    settings = stack_settings(home, "servers", request)
    yield settings
    delete_queues(settings)


def delete_queues(settings: Settings) -> None:
    if settings.broker_url is None:
        return
    try:
        with Connection(settings.broker_url, connect_timeout=5) as conn:
            channel = conn.default_channel
            for queue in broker_queues(settings):
                channel.queue_delete(queue)
    except Exception:  # the broker may be mid-restart after a test; leftovers are harmless
        pass


def broker_queues(settings: Settings) -> list[str]:
    """Every queue prodinf declares for ``settings``: each queue, its lane and (quorum)
    the dead letters."""
    names = [n for q in settings.queues.values() for n in (q, lane(q))]
    return [*names, dead_letters(settings)]


def messages_waiting(settings: Settings) -> dict[str, int]:
    """How many messages wait in each of the settings' queues and lanes on RabbitMQ (a
    queue nobody has declared yet holds none)."""
    assert settings.broker_url is not None, "the servers stack: RabbitMQ"
    waiting: dict[str, int] = {}
    with Connection(settings.broker_url, connect_timeout=5) as conn:
        for queue in broker_queues(settings):
            channel = conn.channel()
            try:
                waiting[queue] = channel.queue_declare(queue, passive=True).message_count
            except NotFound:  # the broker closes the channel that asked
                waiting[queue] = 0
            else:
                channel.close()
    return waiting


@pytest.fixture
def rt_plugins() -> list[str]:
    """The plugins ``rt`` loads; a test module overrides this fixture to load its own."""
    return []


@pytest.fixture
def rt(
    home: Path, rt_plugins: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    """An embedded prodinf (SQLite store, filesystem broker) under the test's home, with
    no worker: the test drives its jobs in this process (``wait_for_job(drive=True)``)."""
    roots = [tmp_path_factory.getbasetemp()]  # the test's and the shared sample databases
    settings = Settings(home=home, plugins=rt_plugins, sqlite_roots=roots)
    fresh_store(settings.store_url).dispose()
    runtime = Runtime(settings, create_celery(settings))
    yield runtime
    runtime.close()


@pytest.fixture
def runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """The submitting side (what the portal or a script uses) for the test's stack."""
    name = "servers" if "servers" in request.fixturenames else "stack"
    settings: Settings = request.getfixturevalue(name)
    rt = Runtime(settings, create_celery(settings))
    yield rt
    rt.close()


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    """A real SMTP server (aiosmtpd) on loopback that keeps every mail it accepts."""
    server = Smtp(free_port())
    server.start()
    yield server
    server.stop()


# -- the web pages in a real browser ----------------------------------------------------


@pytest.fixture
def live(app: Flask) -> Iterator[str]:
    """The app served over real HTTP on 127.0.0.1; its base URL."""
    yield from serve(app)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium driven through chromedriver."""
    yield from driven_chromium(tmp_path)
