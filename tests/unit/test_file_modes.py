"""prodinf's own files are private (issue 14): a probe found the embedded store, which
holds every submitted URI as given, world-readable (0644). Here prodinf starts as
``prodinf up`` starts it (the runtime and the portal's factories, the embedded broker,
a child's log) under a umask of 022, and every file and folder of its home is checked
with ``os.stat``: folders 0700, files 0600. A home an older prodinf left open is
tightened when prodinf starts, each with a one-line warning."""

from __future__ import annotations

import os
import sqlite3
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from prodinf.cli.serve import Child
from prodinf.config import Settings
from prodinf.files import private_folder
from prodinf.mail import Mail, deliver, outbox_dir
from prodinf.portal import create_app
from prodinf.store import upgrade
from tests.embedded import runtime_of
from tests.unit.test_api import submit


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """The usual umask, under which files are made 0644 and folders 0755 unless prodinf
    says otherwise."""
    before = os.umask(0o022)
    yield
    os.umask(before)


@pytest.fixture
def fresh_home(tmp_path: Path) -> Path:
    return tmp_path / "prodinf-home"  # not there yet: prodinf makes it


@pytest.fixture
def settings(fresh_home: Path, tmp_path: Path) -> Settings:
    return Settings(home=fresh_home, sqlite_roots=[tmp_path])


def started(settings: Settings) -> Flask:
    app = create_app(settings)
    upgrade(runtime_of(app).store)
    return app


def test_every_file_prodinf_makes_in_its_home_is_private(
    settings: Settings, fresh_home: Path
) -> None:
    """Given a home that does not exist, when prodinf starts (portal and runtime), takes a
    job (its message in the embedded broker), writes a mail to the outbox and starts a
    child with its log, then home and each of its folders are 0700, and the store, its
    WAL and shared-memory files, the message, the mail and the log are 0600."""
    app = started(settings)
    try:
        submit(app.test_client(), "http_get", {"url": "http://example.org/"})
        deliver(
            Mail(to=["a@example.org"], subject="s", text="t", message_id="<m1@prodinf>"),
            settings,
        )
        logs = private_folder(fresh_home / "logs")  # what prodinf up does
        child = Child("probe", [sys.executable, "-c", "print(1)"], dict(os.environ),
                      logs / "probe.log", lambda *_a, **_k: None)  # fmt: skip
        child.start()
        child.wait(float("inf"))

        folders = [fresh_home, fresh_home / "broker", outbox_dir(settings), logs]
        folders += [p for p in (fresh_home / "broker").iterdir() if p.is_dir()]
        files = [fresh_home / f"prodinf.sqlite{suffix}" for suffix in ("", "-wal", "-shm")]
        files += list((fresh_home / "broker" / "queues").glob("*.msg"))
        files += [*outbox_dir(settings).glob("*.eml"), logs / "probe.log"]
        assert len(files) >= 6, files
        for folder in folders:
            assert mode(folder) == 0o700, f"{folder}: {mode(folder):o}"
        for path in files:
            assert mode(path) == 0o600, f"{path}: {mode(path):o}"
    finally:
        runtime_of(app).close()


def test_an_open_home_is_tightened_when_prodinf_starts(
    settings: Settings, fresh_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Given a home an older prodinf made under umask 022 (home, broker, outbox and logs
    0755; the store, its WAL, a mail and a log 0644), when prodinf starts, then each is
    tightened to 0700 or 0600, each with one warning line naming it, and the store still
    opens."""
    for folder in ("broker/queues", "outbox", "logs"):
        (fresh_home / folder).mkdir(parents=True)
    store = fresh_home / "prodinf.sqlite"
    with sqlite3.connect(store) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE leftover (id INTEGER)")
        (fresh_home / "prodinf.sqlite-wal").touch()
    (fresh_home / "logs" / "worker-jobs.log").write_text("old log\n")
    (fresh_home / "outbox" / "m.eml").write_text("Subject: old\n\nold mail\n")
    assert mode(store) == 0o644 and mode(fresh_home) == 0o755

    app = started(settings)
    try:
        assert client_ok(app)
    finally:
        runtime_of(app).close()

    for folder in (fresh_home, fresh_home / "broker", fresh_home / "broker" / "queues",
                   fresh_home / "outbox", fresh_home / "logs"):  # fmt: skip
        assert mode(folder) == 0o700, folder
    for path in (store, fresh_home / "prodinf.sqlite-wal", fresh_home / "logs" / "worker-jobs.log"):
        assert mode(path) == 0o600, path
    warned = [r.getMessage() for r in caplog.records if "open to others" in r.getMessage()]
    assert any(str(store) in line for line in warned), warned
    assert any(str(fresh_home / "outbox") in line for line in warned), warned
    assert all("\n" not in line for line in warned)


def client_ok(app: Flask) -> bool:
    return bool(app.test_client().get("/api/v1/jobs").status_code == 200)
