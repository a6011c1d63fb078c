"""Which databases a job may open: SQLite files under the configured folders, never
prodinf's own files; server databases on the allowed hosts.

A job's params name databases (``copy_database`` writes its target, replacing it with
``overwrite``), so whoever may submit a job could otherwise name any file the worker
can write, the job store included. :func:`refusal` says why a database may not be
opened; it is asked when the job is submitted (a 400 naming the param) and again by
each step before it opens the database (the files may have changed, and jobs that
prodinf makes itself are not submitted). Paths are resolved (symlinks, ``..``)
before they are compared.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from prodinf.config import Settings

__all__ = ["OWN_FOLDERS", "SQLITE_MAGIC", "not_sqlite", "refusal", "split_host_pattern"]

#: The first 16 bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"
#: The folders of ``PRODINF_HOME`` that hold prodinf's own state.
OWN_FOLDERS = ("broker", "outbox", "logs", "metrics")
#: The files beside a SQLite database that belong to it.
_COMPANIONS = ("", "-wal", "-shm", "-journal")
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}


def refusal(url: URL, settings: Settings) -> str | None:
    """Why a job may not open the database at ``url``, or ``None`` if it may.

    SQLite: the file must lie under a folder of ``PRODINF_SQLITE_ROOTS``, must not be
    the job store (or the registrations' database) or any of ``PRODINF_HOME``'s own
    files, and, if it exists and is not empty, must be a SQLite database. A server:
    its host must match ``PRODINF_DATABASE_HOSTS`` when that is set.
    """
    if url.get_backend_name() == "sqlite":
        return _file_refusal(url.database or "", settings)
    return _host_refusal(url, settings)


def not_sqlite(path: Path) -> str | None:
    """Why the existing file ``path`` cannot be opened as SQLite (a text file,
    ``/etc/passwd``), or ``None``. An empty file is a new SQLite database."""
    try:
        with path.open("rb") as file:
            head = file.read(len(SQLITE_MAGIC))
    except IsADirectoryError:
        return "is a folder, not a SQLite file"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    if head and head != SQLITE_MAGIC:
        return "is not a SQLite database (its first bytes are not the SQLite header)"
    return None


def _file_refusal(database: str, settings: Settings) -> str | None:
    try:
        path = Path(database).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return "cannot be resolved to a file"
    home = settings.home
    if path in _own_databases(settings):
        return "is prodinf's own database (the job store): jobs never open it"
    if path.is_relative_to(home):
        inside = path.relative_to(home).parts
        if len(inside) <= 1 or inside[0] in OWN_FOLDERS:
            return f"is one of prodinf's own files in PRODINF_HOME ({home}): jobs never open them"
    folders = settings.sqlite_folders
    if not any(path.is_relative_to(folder) for folder in folders):
        allowed = ", ".join(str(folder) for folder in folders)
        return f"is not under a folder SQLite files may be in ({allowed}; PRODINF_SQLITE_ROOTS)"
    if path.exists():
        return not_sqlite(path)
    return None


def _own_databases(settings: Settings) -> set[Path]:
    """The job store's and the registrations' SQLite files, with their companions."""
    own: set[Path] = set()
    for url in (settings.store_url, settings.metadata_url):
        if not url:
            continue
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            base = Path(parsed.database).resolve()
            own.update(Path(f"{base}{suffix}") for suffix in _COMPANIONS)
    return own


def _host_refusal(url: URL, settings: Settings) -> str | None:
    patterns = settings.database_hosts
    if not patterns:
        return None
    host = (url.host or "").lower().strip("[]")
    port = url.port or _DEFAULT_PORTS.get(url.get_backend_name())
    for pattern in patterns:
        want_host, want_port = split_host_pattern(pattern)
        if fnmatchcase(host, want_host) and want_port in (None, port):
            return None
    return f"is on host {host}:{port}, which is not in PRODINF_DATABASE_HOSTS"


def split_host_pattern(pattern: str) -> tuple[str, int | None]:
    """``(host glob, port or None)`` of a ``PRODINF_DATABASE_HOSTS`` entry: ``db1``,
    ``*.example.org``, ``db1:3306``, ``10.0.0.7``, ``::1`` or ``[::1]:5432``.

    A port that is not a number leaves the whole entry a host glob, which then matches
    no host: a mistyped entry allows nothing rather than more.
    """
    text = pattern.strip().lower()
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        return text, None
    return host, int(port) if port else None
