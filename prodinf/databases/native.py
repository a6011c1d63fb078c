"""Copying a table with the native client tools: ``mysqldump | mysql`` or ``psql | psql``.

Used for same-engine copies when the tools are installed, because the C clients
move rows several times faster than Python can (pure-Python code touches every
row; these never bring a row into Python). Each table goes over as one
transaction (``mysqldump --no-autocommit``; one ``COPY`` statement in PostgreSQL):
after a crash a table is either all there or not at all, and a partly loaded one
(from an earlier streamed attempt) is emptied first (by the caller, or in
PostgreSQL by the loading transaction itself). Passwords reach
the tools through ``MYSQL_PWD``/``PGPASSWORD`` in their environment, never on a
command line; their error output is masked before it is shown.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import tempfile

from prodinf.databases.snapshot import BEGIN_SNAPSHOT, set_snapshot
from prodinf.databases.uri import DatabaseURI
from prodinf.exceptions import RemoteUnavailable
from prodinf.redact import redact_text

#: Where Debian installs each PostgreSQL version's client programs.
DEBIAN_CLIENTS = "/usr/lib/postgresql"

__all__ = ["mysql_tools", "mysqldump_table", "native_table", "native_tools", "psql_table"]


def mysql_tools() -> tuple[str, str] | None:
    """Paths of the dump and client programs, or ``None`` when either is missing."""
    dump = shutil.which("mariadb-dump") or shutil.which("mysqldump")
    client = shutil.which("mariadb") or shutil.which("mysql")
    return (dump, client) if dump and client else None


def psql_tool() -> str | None:
    """Path of ``psql``, or ``None``.

    Debian's ``psql`` is ``pg_wrapper``, a Perl script that picks the newest installed
    client and runs it: 25 ms of CPU per start, two starts a table. The newest client
    is run directly instead, as the wrapper itself would choose it.
    """
    found = shutil.which("psql")
    if found is None or os.path.basename(os.path.realpath(found)) != "pg_wrapper":
        return found
    return _newest_debian_client("psql") or found


@functools.cache
def _newest_debian_client(name: str) -> str | None:
    """``/usr/lib/postgresql/<newest version>/bin/<name>``, if there is one."""
    versions = glob.glob(f"{DEBIAN_CLIENTS}/*/bin/{name}")
    numbered = [p for p in versions if p.split("/")[-3].replace(".", "").isdigit()]
    if not numbered:
        return None
    return max(numbered, key=lambda p: [int(n) for n in p.split("/")[-3].split(".")])


def native_tools(engine_name: str) -> bool:
    """Whether the native tools for ``engine_name`` are installed."""
    if engine_name == "mysql":
        return mysql_tools() is not None
    if engine_name == "postgresql":
        return psql_tool() is not None
    return False


def native_table(
    src: DatabaseURI,
    tgt: DatabaseURI,
    table: str,
    columns: list[str],
    *,
    freeze: bool = False,
    snapshot: str | None = None,
) -> None:
    """Copy the rows of ``table`` (empty on the target) with the engine's native tools.

    ``freeze`` and ``snapshot`` (PostgreSQL): see ``psql_table``.
    """
    if src.engine_name == "postgresql":
        psql_table(src, tgt, table, columns, freeze=freeze, snapshot=snapshot)
    else:
        mysqldump_table(src, tgt, table)


def _psql_args(uri: DatabaseURI) -> tuple[list[str], dict[str, str]]:
    url = uri.url
    args = ["-X", "-q", "-v", "ON_ERROR_STOP=1"]
    if url.host:
        args += ["-h", str(url.host)]
    if url.port:
        args += ["-p", str(url.port)]
    if url.username:
        args += ["-U", str(url.username)]
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    env["PGCLIENTENCODING"] = "UTF8"
    return [*args, "-d", uri.database], env


def _quote_pg(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def psql_table(
    src: DatabaseURI,
    tgt: DatabaseURI,
    table: str,
    columns: list[str],
    *,
    freeze: bool = False,
    snapshot: str | None = None,
) -> None:
    """``COPY ... TO STDOUT`` on the source piped into ``COPY ... FROM STDIN`` on the target.

    ``freeze``: the target table is emptied (``TRUNCATE``) in the transaction that
    loads it with ``COPY ... (FREEZE)``, so its rows are written already frozen and
    visible to all: the first reads of the new table (its index builds, its
    checksum) then have no visibility hint to set on each row, no page to write
    back. ``TRUNCATE`` fails on a table a foreign key refers to.

    ``snapshot`` (an id from ``pg_export_snapshot()``, see ``prodinf.databases.snapshot``):
    the source's rows are read as that snapshot sees them.
    """
    psql = psql_tool()
    if psql is None:
        raise RuntimeError("psql is not installed")
    cols = ", ".join(_quote_pg(c) for c in columns)
    src_args, src_env = _psql_args(src)
    tgt_args, tgt_env = _psql_args(tgt)
    name = _quote_pg(table)
    read = ["-c", f"COPY {name} ({cols}) TO STDOUT"]
    if snapshot is not None:
        # -q: the command tags of these statements do not reach the output, only COPY's rows.
        read = ["-c", f"{BEGIN_SNAPSHOT}; {set_snapshot(snapshot)}"]
        read += ["-c", f"COPY {name} ({cols}) TO STDOUT", "-c", "COMMIT"]
    dump = [psql, *src_args, *read]
    if freeze:
        into = ["-1", "-c", f"TRUNCATE {name}", "-c", f"COPY {name} ({cols}) FROM STDIN (FREEZE)"]
    else:
        into = ["-c", f"COPY {name} ({cols}) FROM STDIN"]
    load = [psql, *tgt_args, *into]
    _pipe(dump, src_env, load, tgt_env, table, src, tgt, ("psql (source)", "psql (target)"))


def _connection_args(uri: DatabaseURI) -> tuple[list[str], dict[str, str]]:
    url = uri.url
    args = ["--default-character-set=utf8mb4"]
    if url.host:
        args += ["--protocol=TCP", f"--host={url.host}"]
    if url.port:
        args.append(f"--port={url.port}")
    if url.username:
        args.append(f"--user={url.username}")
    env = {k: v for k, v in os.environ.items() if k != "MYSQL_PWD"}
    if url.password:
        env["MYSQL_PWD"] = str(url.password)
    return args, env


def mysqldump_table(src: DatabaseURI, tgt: DatabaseURI, table: str) -> None:
    """Copy the rows of ``table`` (which must be empty on the target) in one transaction."""
    tools = mysql_tools()
    if tools is None:
        raise RuntimeError("mysqldump and mysql are not installed")
    dump_bin, client_bin = tools
    src_args, src_env = _connection_args(src)
    tgt_args, tgt_env = _connection_args(tgt)
    dump = [
        dump_bin, *src_args, "--no-create-info", "--skip-triggers", "--single-transaction",
        "--quick", "--no-autocommit", "--skip-lock-tables", "--skip-add-locks", "--hex-blob",
        "--skip-comments", "--extended-insert", src.database, table,
    ]  # fmt: skip
    load = [client_bin, *tgt_args, "--batch", tgt.database]
    _pipe(dump, src_env, load, tgt_env, table, src, tgt, ("mysqldump", "mysql"))


def _pipe(
    dump: list[str],
    src_env: dict[str, str],
    load: list[str],
    tgt_env: dict[str, str],
    table: str,
    src: DatabaseURI,
    tgt: DatabaseURI,
    names: tuple[str, str],
) -> None:
    """Run ``dump | load``; a failure of either is a ``RemoteUnavailable`` with masked output."""
    with tempfile.TemporaryFile() as dump_err, tempfile.TemporaryFile() as load_err:
        producer = subprocess.Popen(dump, stdout=subprocess.PIPE, stderr=dump_err, env=src_env)
        try:
            consumer = subprocess.run(load, stdin=producer.stdout, stderr=load_err, env=tgt_env)
        finally:
            if producer.stdout is not None:
                producer.stdout.close()
            producer.wait()
        for proc_code, err, who, uri in (
            (producer.returncode, dump_err, names[0], src),
            (consumer.returncode, load_err, names[1], tgt),
        ):
            if proc_code:
                err.seek(0)
                tail = err.read()[-500:].decode(errors="replace").strip()
                raise RemoteUnavailable(
                    f"{who} failed copying table {table} ({uri.masked()}): {redact_text(tail)}"
                )
