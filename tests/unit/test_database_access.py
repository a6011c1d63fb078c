"""The databases jobs open (issue 14). A probe of the open portal found that
``copy_database`` wrote any ``sqlite:///`` path it was given (with ``overwrite`` it
replaced an unrelated SQLite file, and ``PRODINF_HOME/prodinf.sqlite``, the job store
itself) and that ``healthcheck`` opened any file as SQLite (``/etc/passwd``). Each
attack is made here again, with real files, and seen refused: at submission with a 400
naming the param, and again when the job opens the database."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from prodinf.config import Settings
from prodinf.databases import DatabaseURI
from prodinf.exceptions import PermanentError, ValidationError
from prodinf.kinds.database.healthcheck import run_healthchecks
from prodinf.portal import create_app
from prodinf.store import upgrade
from tests.embedded import runtime_of
from tests.sample_data import build_core_like
from tests.unit.test_api import JOBS, assert_clean_error, drive, submit
from tests.unit.test_cli import prodinf
from tests.unit.test_handover import NAME, Harness, config

PASSWD = Path("/etc/passwd")


@pytest.fixture
def dbs(tmp_path: Path) -> Path:
    """The one folder SQLite files may be in."""
    folder = tmp_path / "dbs"
    folder.mkdir()
    return folder


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A folder outside the roots, holding an unrelated SQLite file someone cares about."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    with sqlite3.connect(folder / "precious.sqlite") as conn:
        conn.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("INSERT INTO note (text) VALUES ('keep me')")
    return folder


@pytest.fixture
def settings(home: Path, dbs: Path) -> Settings:
    """Embedded settings whose SQLite roots are ``dbs`` and, to show that no root makes
    them reachable, PRODINF_HOME itself."""
    return Settings(
        home=home,
        sqlite_roots=[dbs, home],
        reconcile_interval=0.2,
        lease_seconds=3.0,
        redrive_after=30.0,
    )


@pytest.fixture
def source(dbs: Path) -> str:
    uri = f"sqlite:///{dbs / NAME}.sqlite"
    build_core_like(uri, genes=3)
    return uri


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy(client: FlaskClient, src: str, tgt: str) -> Any:
    params = {"src_uri": src, "tgt_uri": tgt, "overwrite": True}
    return client.post(JOBS, json={"kind": "copy_database", "params": params})


def job_count(app: Flask) -> int:
    return runtime_of(app).store.list_jobs()[1]


# -- copy_database ---------------------------------------------------------------------------


def test_a_copy_over_a_file_outside_the_roots_is_refused_and_the_file_kept(
    app: Flask, client: FlaskClient, source: str, dbs: Path, elsewhere: Path
) -> None:
    """Given an unrelated SQLite file outside the roots, when a copy with overwrite names
    it as the target (directly, through .., or through a symlink in the roots), then each
    is a 400 naming params.tgt_uri that says which folders are allowed, no job is
    stored, and the file is byte for byte what it was."""
    precious = elsewhere / "precious.sqlite"
    before = digest(precious)
    (dbs / "link.sqlite").symlink_to(precious)

    for target in (precious, dbs / ".." / "elsewhere" / "precious.sqlite", dbs / "link.sqlite"):
        refused = copy(client, source, f"sqlite:///{target}")

        assert_clean_error(refused, 400, "params.tgt_uri")
        assert "PRODINF_SQLITE_ROOTS" in refused.json["message"]
        assert str(dbs) in refused.json["message"]
    assert job_count(app) == 0
    assert digest(precious) == before


@pytest.mark.parametrize(
    "own",
    [
        "prodinf.sqlite",
        "prodinf.sqlite-wal",
        "prodinf.sqlite-shm",
        "anything.sqlite",
        "broker/queues/x.sqlite",
        "outbox/x.sqlite",
        "logs/x.sqlite",
        "metrics/x.sqlite",
    ],
)
def test_the_job_store_and_home_files_are_never_a_copy_target(
    app: Flask, client: FlaskClient, source: str, home: Path, own: str
) -> None:
    """Given a store holding a job, and PRODINF_HOME among the roots, when a copy with
    overwrite targets the store, its WAL or SHM file, or any of home's own files, then it
    is a 400 naming params.tgt_uri, and the store is intact: its job is still there and
    SQLite finds nothing wrong in it."""
    kept = submit(client, "copy_database", {"src_uri": source, "tgt_uri": source + ".copy"})
    store = home / "prodinf.sqlite"

    refused = copy(client, source, f"sqlite:///{home / own}")

    assert_clean_error(refused, 400, "params.tgt_uri")
    assert "prodinf's own" in refused.json["message"]
    assert client.get(f"{JOBS}/{kept}").status_code == 200
    assert job_count(app) == 1
    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM prodinf_jobs").fetchone() == (1,)


def test_a_target_changed_after_submission_is_refused_when_the_job_opens_it(
    app: Flask, client: FlaskClient, source: str, dbs: Path, elsewhere: Path
) -> None:
    """Given a copy submitted to a new file in the roots, when that path is made a symlink
    to a file outside them before the job runs, then the job fails at its first step,
    once (not retried), naming tgt_uri, and the file outside is untouched."""
    precious = elsewhere / "precious.sqlite"
    before = digest(precious)
    target = dbs / "target.sqlite"
    job_id = submit(client, "copy_database", {"src_uri": source, "tgt_uri": f"sqlite:///{target}",
                                              "overwrite": True})  # fmt: skip
    target.symlink_to(precious)

    drive(app, job_id)

    job = runtime_of(app).store.describe(job_id)
    assert job["status"] == "failed"
    assert job["error"]["message"].startswith("tgt_uri: ")
    assert "PRODINF_SQLITE_ROOTS" in job["error"]["message"]
    assert job["steps"][0]["attempts"] == 1
    assert digest(precious) == before


# -- healthcheck, register_metadata ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["healthcheck", "register_metadata"])
def test_a_text_file_is_never_opened_as_sqlite(
    app: Flask, client: FlaskClient, dbs: Path, kind: str
) -> None:
    """Given a text file in the roots shaped like /etc/passwd, and /etc/passwd itself,
    when a healthcheck or a registration names either, then each is a 400 naming
    params.database_uri (the text file: not a SQLite database; /etc/passwd: not under
    the roots), and the text file is unchanged."""
    text = dbs / f"{NAME}.sqlite"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    before = digest(text)
    targets = [text] + ([PASSWD] if PASSWD.exists() else [])

    for target in targets:
        refused = client.post(
            JOBS, json={"kind": kind, "params": {"database_uri": f"sqlite:///{target}"}}
        )
        assert_clean_error(refused, 400, "params.database_uri")
        said = refused.json["message"]
        assert ("not a SQLite database" if target == text else "PRODINF_SQLITE_ROOTS") in said
    assert digest(text) == before
    assert job_count(app) == 0


def test_a_healthcheck_refuses_a_file_that_became_text_before_it_ran(
    app: Flask, client: FlaskClient, source: str
) -> None:
    """Given a healthcheck submitted on a real database, when the file is replaced by text
    before the job runs, then the job fails once, saying it is not a SQLite database."""
    job_id = submit(client, "healthcheck", {"database_uri": source, "groups": ["meta"]})
    path = DatabaseURI.parse(source).path
    path.unlink()
    path.write_text("root:x:0:0:root:/root:/bin/bash\n")

    drive(app, job_id)

    job = runtime_of(app).store.describe(job_id)
    assert job["status"] == "failed"
    assert "not a SQLite database" in job["error"]["message"]
    assert job["steps"][0]["attempts"] == 1


def test_run_healthchecks_refuses_a_text_file_without_opening_it(
    settings: Settings, dbs: Path
) -> None:
    """Given a text file (a script calling run_healthchecks, no job), then it is refused,
    saying it is not a SQLite database, and the file is unchanged."""
    text = dbs / f"{NAME}.sqlite"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    before = digest(text)

    with pytest.raises(PermanentError, match="not a SQLite database"):
        run_healthchecks(f"sqlite:///{text}", settings, groups=["meta"])
    assert digest(text) == before


# -- server databases ------------------------------------------------------------------------


@pytest.fixture
def hosts_app(settings: Settings) -> Iterator[Flask]:
    limited = settings.model_copy(
        update={"database_hosts": ["db1.example.org", "*.staging.example.org:3306", "[::1]"]}
    )
    app = create_app(limited)
    upgrade(runtime_of(app).store)
    yield app
    runtime_of(app).close()


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("mysql://u@db1.example.org/x", True),
        ("mysql://u@DB1.Example.org:3307/x", True),
        ("mysql://u@a.staging.example.org/x", True),  # 3306, MySQL's own port
        ("mysql://u@a.staging.example.org:3307/x", False),
        ("postgresql://u@a.staging.example.org/x", False),  # 5432
        ("postgresql://u@[::1]:5433/x", True),
        ("mysql://u@evil.example.org/x", False),
        ("mysql://u@169.254.169.254/x", False),
    ],
)
def test_server_databases_are_limited_to_the_allowed_hosts(
    hosts_app: Flask, uri: str, allowed: bool
) -> None:
    """Given PRODINF_DATABASE_HOSTS, when a healthcheck names a database on a host (and
    port) it lists, then it is taken; on any other, a 400 naming params.database_uri
    and the setting."""
    answer = hosts_app.test_client().post(
        JOBS, json={"kind": "healthcheck", "params": {"database_uri": uri}}
    )
    if allowed:
        assert answer.status_code == 201, answer.get_data(as_text=True)
    else:
        assert_clean_error(answer, 400, "params.database_uri")
        assert "PRODINF_DATABASE_HOSTS" in answer.json["message"]


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:///file:/etc/passwd?uri=true",
        "sqlite:///{dbs}/x.sqlite?mode=ro",
        "postgresql://u@db1.example.org/x?host=evil.example.org",
        "mysql://u@db1.example.org/x?unix_socket=/run/mysqld/mysqld.sock",
        "mysql://u@db1.example.org/x?read_default_file=/etc/passwd",
    ],
)
def test_options_that_open_something_else_are_refused(
    client: FlaskClient, dbs: Path, uri: str
) -> None:
    """Given a URI whose ?options would make the driver open another file or host than
    the URI names, then it is a 400 naming params.database_uri."""
    answer = client.post(
        JOBS,
        json={"kind": "healthcheck", "params": {"database_uri": uri.format(dbs=dbs)}},
    )
    assert_clean_error(answer, 400, "params.database_uri")


# -- handover --------------------------------------------------------------------------------


def test_a_handover_from_outside_the_roots_is_refused(
    settings: Settings, tmp_path: Path, elsewhere: Path, dbs: Path
) -> None:
    """Given a handover whose source lies outside the roots, or whose staging folder does,
    then the submission is refused naming src_uri, before anything is opened."""
    outside = f"sqlite:///{elsewhere / NAME}.sqlite"
    build_core_like(outside, genes=3)
    staged_in_roots = settings.model_copy(update={"handover_config": config(dbs), "release": 115})
    fields = {"contact": "a@example.org", "comment": "test"}

    with pytest.raises(ValidationError, match="PRODINF_SQLITE_ROOTS") as caught:
        Harness(staged_in_roots).handovers.submit({"src_uri": outside, **fields})
    assert caught.value.field == "src_uri"

    inside = f"sqlite:///{dbs / NAME}.sqlite"
    build_core_like(inside, genes=3)
    staged_outside = staged_in_roots.model_copy(update={"handover_config": config(tmp_path)})
    with pytest.raises(ValidationError, match="staging target") as caught:
        Harness(staged_outside).handovers.submit({"src_uri": inside, **fields})
    assert caught.value.field == "src_uri"
    assert "PRODINF_SQLITE_ROOTS" in caught.value.message


# -- the defaults ----------------------------------------------------------------------------


def test_the_default_roots_are_home_data_and_staging(home: Path) -> None:
    """Given no PRODINF_SQLITE_ROOTS, then only home/data and home/staging are allowed,
    and a relative root is under home."""
    assert Settings(home=home).sqlite_folders == [home / "data", home / "staging"]
    assert Settings(home=home, sqlite_roots="stage2, /srv/dbs").sqlite_folders == [
        home / "stage2",
        Path("/srv/dbs").resolve(),
    ]
    settings = Settings(home=home)
    assert DatabaseURI.parse(f"sqlite:///{home}/staging/a.sqlite").refusal(settings) is None
    assert DatabaseURI.parse(f"sqlite:///{home.parent}/a.sqlite").refusal(settings)


def test_a_command_in_a_shell_may_open_databases_in_its_own_folder(
    home: Path, tmp_path: Path, elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given no PRODINF_SQLITE_ROOTS and a shell in a folder holding production/ (the
    README's first handover), when prodinf post names sqlite:///production/..., then it
    is taken; a file in another folder is refused naming params.database_uri."""
    for name in list(os.environ):
        if name.startswith("PRODINF_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PRODINF_HOME", str(home))
    shell = tmp_path / "shell"
    shell.mkdir()
    monkeypatch.chdir(shell)
    build_core_like(f"sqlite:///production/{NAME}.sqlite", genes=3)

    taken = prodinf("post", "healthcheck", "-p", f"database_uri=sqlite:///production/{NAME}.sqlite")
    refused = prodinf(
        "post", "healthcheck", "-p", f"database_uri=sqlite:///{elsewhere}/precious.sqlite"
    )

    assert taken.exit_code == 0, taken.output
    assert refused.exit_code == 1
    assert "params.database_uri" in refused.output
    assert "PRODINF_SQLITE_ROOTS" in refused.output
