"""The store's schema and reach, on every backend: migrations, a store nobody answers at,
and the fixture that makes a fresh database. Read each test as Given / When / Then.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from prodinf.exceptions import StoreUnavailable
from prodinf.store import Base, JobStore, upgrade
from prodinf.store.migrate import alembic_config
from tests.conftest import backend_url, fresh_store
from tests.world import World

# -- migrations ------------------------------------------------------------------------------


def test_upgrade_twice_is_a_no_op(world: World) -> None:
    # Given a migrated store holding a job
    job_id = world.submit("plain", {"payload": {"keep": "me"}})
    head = ScriptDirectory.from_config(alembic_config(world.store)).get_current_head()

    # When upgrade runs again
    upgrade(world.store)
    upgrade(world.store)

    # Then the schema stays at head with one version row, and the job is untouched
    with world.store.engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM prodinf_alembic_version")).all()
    assert [v for (v,) in versions] == [head]
    assert world.store.describe(job_id)["params"] == {"payload": {"keep": "me"}}


def test_migrated_schema_matches_the_models(any_store: JobStore) -> None:
    # Given a store migrated by Alembic (not by create_all)
    # When Alembic compares the live schema with the models
    with any_store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": "prodinf_alembic_version",
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        diff = compare_metadata(context, Base.metadata)

    # Then there is nothing a new migration would have to do
    assert diff == []


# -- availability ----------------------------------------------------------------------------

PASSWORD = "s3cr3t-pw"


def unreachable(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "postgresql":
        yield f"postgresql+psycopg://prodinf:{PASSWORD}@127.0.0.1:1/prodinf"
    elif backend == "mysql":
        yield f"mysql+pymysql://prodinf:{PASSWORD}@127.0.0.1:1/prodinf"
    else:
        yield f"sqlite:///{tmp_path}"  # a directory, not a file
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        yield f"sqlite:///{blocker}/store.sqlite"  # under a file: cannot be created


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"])
def test_an_unreachable_store_raises_store_unavailable(backend: str, tmp_path: Path) -> None:
    # Given a store URL nothing answers at (no server needed: that is the point)
    for url in unreachable(backend, tmp_path):
        # When it is used
        with pytest.raises(StoreUnavailable) as caught:
            store = JobStore(url)
            try:
                store.ping()
            finally:
                store.dispose()

        # Then the error is prodinf's transient one, without the password
        assert PASSWORD not in str(caught.value)
        assert backend in str(caught.value)


# -- the fixture itself ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_fresh_store_creates_a_database_that_does_not_exist_yet(
    backend: str, tmp_path: Path
) -> None:
    # Guards conftest.fresh_store: on a new CI server the test database is missing.
    # Given a database name that does not exist on the server
    url = make_url(backend_url(backend, tmp_path))
    name = f"prodinf_new_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        url.set(database="postgres" if backend == "postgresql" else "mysql"),
        isolation_level="AUTOCOMMIT",
    )
    try:
        # When fresh_store is asked for it, then it makes it, and the store answers
        store = fresh_store(url.set(database=name).render_as_string(hide_password=False))
        store.ping()
        store.dispose()
    finally:
        with admin.connect() as conn:
            quoted = f'"{name}"' if backend == "postgresql" else f"`{name}`"
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))
        admin.dispose()
