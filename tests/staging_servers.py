"""Second database servers on loopback, for staging: a handover copies a database to
another server, so its tests and benchmark start a MariaDB and a PostgreSQL of their
own beside the machine's (real servers, from the same binaries, on free ports, with
their data in a temporary folder), and stop them after.

Both need the server binaries (``mariadbd``, PostgreSQL's ``initdb``/``pg_ctl``) and,
run as root, the ``mysql`` and ``postgres`` system users to run them as; without them
``start_*`` raises ``Unavailable`` saying what is missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import NullPool, create_engine, text

from tests.loopback import free_port

__all__ = ["Unavailable", "staging_mariadb", "staging_postgres"]


class Unavailable(Exception):
    """The binaries or system users a second server needs are missing here."""


def _owned_by(folder: Path, user: str) -> None:
    if os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise Unavailable(f"no system user {user!r} to run the server as") from None
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _ready(url: str, timeout: float = 30.0) -> None:
    engine = create_engine(url, poolclass=NullPool)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        engine.dispose()


@contextlib.contextmanager
def staging_mariadb(folder: Path) -> Iterator[str]:
    """A MariaDB server of its own on a free loopback port: its ``mysql://root@...``
    server URL (root, no password)."""
    server, install = (
        shutil.which("mariadbd", path="/usr/sbin:/usr/bin"),
        shutil.which("mariadb-install-db"),
    )
    if server is None or install is None:
        raise Unavailable("mariadbd or mariadb-install-db is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    _owned_by(folder, "mysql")
    user = ["--user=mysql"] if os.geteuid() == 0 else []
    subprocess.run(
        [install, *user, f"--datadir={folder / 'data'}", "--auth-root-authentication-method=normal",
         "--skip-test-db"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    log = open(folder / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [server, *user, f"--datadir={folder / 'data'}", f"--port={port}",
         "--bind-address=127.0.0.1", f"--socket={folder / 'sock'}",
         f"--pid-file={folder / 'pid'}", "--skip-log-bin", "--innodb-buffer-pool-size=256M"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    url = f"mysql://root@127.0.0.1:{port}"
    try:
        _ready(f"mysql+pymysql://root@127.0.0.1:{port}/mysql")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise Unavailable(f"PostgreSQL's {name} is not installed")
    return found[-1]


@contextlib.contextmanager
def staging_postgres(folder: Path) -> Iterator[str]:
    """A PostgreSQL cluster of its own on a free loopback port: its
    ``postgresql://postgres@...`` server URL (trust auth)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    folder.mkdir(parents=True, exist_ok=True)
    _owned_by(folder, "postgres")
    as_user = ["su", "postgres", "-c"] if os.geteuid() == 0 else None
    port = free_port()
    data = folder / "data"

    def run(*args: str) -> None:
        command = " ".join(f"'{a}'" for a in args)
        subprocess.run([*as_user, command] if as_user else list(args), check=True,
                       capture_output=True)  # fmt: skip

    run(initdb, "-D", str(data), "-A", "trust", "-U", "postgres")
    run(pg_ctl, "-D", str(data), "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off",
        "-l", str(folder / "log"), "-w", "start")  # fmt: skip
    try:
        _ready(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres")
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)
