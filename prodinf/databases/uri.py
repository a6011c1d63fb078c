"""Database URIs as users write them, parsed once into what SQLAlchemy needs.

Users give ``mysql://``, ``mariadb://``, ``postgres://``, ``postgresql://`` or
``sqlite:///path``; prodinf fills in the driver it ships with (PyMySQL,
psycopg 3) so every kind talks to a server the same way. A ``DatabaseURI``
never shows its password: ``masked()`` and ``str()`` replace it with ``***``,
and errors raised while connecting name the masked URI only.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy
from pydantic import AfterValidator, StringConstraints, ValidationInfo
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from prodinf.config import Settings
from prodinf.databases.access import not_sqlite, refusal
from prodinf.exceptions import PermanentError, RemoteUnavailable, ValidationError
from prodinf.limits import MAX_URL_LENGTH
from prodinf.redact import redact_text

__all__ = [
    "MAX_URI_LENGTH",
    "DatabaseURI",
    "DatabaseUriField",
    "database_errors",
    "load_drivers",
    "validate_database_uri",
]

#: What a user may write before ``://`` and the SQLAlchemy driver it means.
_DRIVERS = {
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "mysql+pymysql": "mysql+pymysql",
    "mariadb+pymysql": "mysql+pymysql",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
}

#: The drivers behind ``_DRIVERS`` (prodinf's extras ``postgres`` and ``mysql``).
DRIVER_MODULES = ("psycopg", "pymysql")


def load_drivers() -> list[str]:
    """Import the database drivers that are installed; the names of those imported.

    A worker calls it as it starts, before its pool forks: every pool process then has
    them, so its first copy or check does not pay for their import (0.1 s of CPU
    here, a few percent of a 1M-row copy) inside a job. A driver not installed is
    skipped: its URIs fail as before, when used.
    """
    loaded = []
    for name in DRIVER_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # installed, but something it needs is missing
                raise
            continue
        loaded.append(name)
    return loaded


# Names are quoted in CREATE/DROP DATABASE, so they are kept to what needs no escaping.
_NAME = re.compile(r"^[A-Za-z0-9_$-]{1,63}$")

#: Driver options (``?name=value``) a job's URI may not carry: they send the connection
#: to another host or socket than the URI names (libpq's ``host``, PyMySQL's
#: ``unix_socket``) or make the driver read local files (``read_default_file``,
#: ``passfile``, ``service``), which would slip past PRODINF_DATABASE_HOSTS.
_UNSAFE_OPTIONS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "unix_socket",
        "service",
        "servicefile",
        "passfile",
        "read_default_file",
        "read_default_group",
        "local_infile",
        "init_command",
        "sslkeylogfile",
    }
)

# Server error codes that mean "these credentials will never work" (not "try later").
_MYSQL_AUTH_CODES = {1044, 1045, 1049, 1698}


@dataclass(frozen=True)
class DatabaseURI:
    """A parsed database URI: one database on one server (or one SQLite file)."""

    url: URL

    @classmethod
    def parse(cls, text_: str, *, field: str = "database_uri") -> DatabaseURI:
        """Parse what a user wrote; ``ValidationError(field=field)`` when it is not a database URI.

        The error message never repeats the URI (it may hold a password).
        """
        url = _parse_url(text_)
        if isinstance(url, str):
            raise ValidationError(f"{field}: {url}", field=field)
        return cls(url)

    @classmethod
    def of(cls, value: str | DatabaseURI) -> DatabaseURI:
        """``value`` itself if already parsed, else ``parse(value)``."""
        return value if isinstance(value, DatabaseURI) else cls.parse(value)

    @property
    def engine_name(self) -> str:
        """``mysql`` (MySQL and MariaDB), ``postgresql`` or ``sqlite``."""
        return self.url.get_backend_name()

    @property
    def database(self) -> str:
        """The database name; for SQLite, the file's stem."""
        name = self.url.database or ""
        return Path(name).stem if self.engine_name == "sqlite" else name

    @property
    def path(self) -> Path:
        """The SQLite file (only meaningful for SQLite)."""
        return Path(self.url.database or "")

    def masked(self) -> str:
        """The URI with its password shown as ``***`` (and the driver as the user wrote it)."""
        return redact_text(self.secret())

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"DatabaseURI({self.masked()!r})"

    def refusal(self, settings: Settings) -> str | None:
        """Why a job may not open this database (:func:`prodinf.databases.access.refusal`:
        a SQLite file outside ``PRODINF_SQLITE_ROOTS`` or among prodinf's own, a host
        not in ``PRODINF_DATABASE_HOSTS``), or ``None``."""
        return refusal(self.url, settings)

    def allowed(self, settings: Settings, field: str) -> DatabaseURI:
        """This URI if a job may open it, checked again as the job opens it (the files may
        have changed since it was submitted); else ``PermanentError`` naming ``field``."""
        why = self.refusal(settings)
        if why is not None:
            raise PermanentError(f"{field}: {self.masked()} {why}", field=field)
        return self

    def check_sqlite_file(self) -> None:
        """``PermanentError`` if this is an existing file that is not a SQLite database
        (opening ``/etc/passwd`` as SQLite must not even be tried)."""
        if self.engine_name == "sqlite" and self.path.exists():
            why = not_sqlite(self.path)
            if why is not None:
                raise PermanentError(f"{self.masked()} {why}")

    def secret(self) -> str:
        """The full URI with its password: for native tools' environments only, never shown."""
        return self.url.render_as_string(hide_password=False)

    def create_engine(self, **kw: Any) -> sqlalchemy.Engine:
        """A SQLAlchemy engine for this database (``kw`` go to ``create_engine``)."""
        if self.engine_name != "sqlite":
            kw.setdefault("pool_pre_ping", True)
        return sqlalchemy.create_engine(self.url, **kw)

    def server(self) -> DatabaseURI:
        """The same server without this database: where CREATE/DROP DATABASE run.

        PostgreSQL needs a database to connect to; its ``postgres`` one is used.
        For SQLite, the URI itself (a file needs no server).
        """
        if self.engine_name == "postgresql":
            return DatabaseURI(self.url.set(database="postgres"))
        if self.engine_name == "mysql":
            # URL.set(database=None) keeps the old name; build the URL afresh.
            return DatabaseURI(
                URL.create(
                    self.url.drivername,
                    username=self.url.username,
                    password=self.url.password,
                    host=self.url.host,
                    port=self.url.port,
                    query=self.url.query,
                )
            )
        return self

    def with_database(self, name: str) -> DatabaseURI:
        """The URI of database ``name`` on the same server (SQLite: a file beside this one)."""
        if self.engine_name == "sqlite":
            return DatabaseURI(self.url.set(database=str(self.path.with_name(f"{name}.sqlite"))))
        if not _NAME.match(name):
            raise ValidationError(f"bad database name {name[:80]!r}", field="database")
        return DatabaseURI(self.url.set(database=name))

    def _admin(self) -> sqlalchemy.Engine:
        return self.server().create_engine(
            isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.NullPool
        )

    @contextmanager
    def admin(self) -> Iterator[sqlalchemy.Connection | None]:
        """One connection to this database's server, where ``exists`` and ``create`` run,
        for several of them in a row (each connection costs the server a process start).
        ``None`` for SQLite, which needs none."""
        if self.engine_name == "sqlite":
            yield None
            return
        engine = self._admin()
        try:
            with database_errors(self), engine.connect() as conn:
                yield conn
        finally:
            engine.dispose()

    def same_server(self, other: DatabaseURI) -> bool:
        """Whether ``other`` is on this database's server, reached the same way."""
        return self.engine_name != "sqlite" and self.server().secret() == other.server().secret()

    def exists(self, admin: sqlalchemy.Connection | None = None) -> bool:
        """Whether the database (SQLite: the file) exists; on ``admin`` if given (a
        connection from :meth:`admin`)."""
        if self.engine_name == "sqlite":
            return self.path.exists()
        if admin is None:
            with self.admin() as conn:
                return self.exists(conn)
        query = (
            "SELECT 1 FROM pg_database WHERE datname = :n"
            if self.engine_name == "postgresql"
            else "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :n"
        )
        with database_errors(self):
            return admin.scalar(text(query), {"n": self.database}) is not None

    def create(self, admin: sqlalchemy.Connection | None = None) -> None:
        """Create the database if it does not exist (SQLite: an empty file); on ``admin``
        if given (a connection from :meth:`admin`)."""
        if self.engine_name == "sqlite":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch(exist_ok=True)
            return
        if admin is None:
            with self.admin() as conn:
                self.create(conn)
            return
        with database_errors(self):
            if self.engine_name == "mysql":
                admin.execute(
                    text(
                        f"CREATE DATABASE IF NOT EXISTS `{self.database}` "
                        "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                    )
                )
            elif not admin.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": self.database}
            ):
                admin.execute(text(f"CREATE DATABASE \"{self.database}\" ENCODING 'UTF8'"))

    def drop(self) -> None:
        """Drop the database if it exists, closing other sessions on it (PostgreSQL)."""
        if self.engine_name == "sqlite":
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return
        with database_errors(self), self._admin().connect() as conn:
            if self.engine_name == "mysql":
                conn.execute(text(f"DROP DATABASE IF EXISTS `{self.database}`"))
            else:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))

    def table_names(self, *, exists: bool | None = None) -> list[str]:
        """The tables in the database (empty when it does not exist; ``exists``: whether
        it does, if known already)."""
        if not (self.exists() if exists is None else exists):
            return []
        engine = self.create_engine(poolclass=sqlalchemy.NullPool)
        try:
            with database_errors(self), engine.connect() as conn:
                return sorted(sqlalchemy.inspect(conn).get_table_names())
        finally:
            engine.dispose()


def _is_auth_failure(exc: DBAPIError) -> bool:
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_AUTH_CODES:
        return True
    message = str(orig).lower()
    return "password authentication failed" in message or (
        "database" in message and "does not exist" in message
    )


@contextmanager
def database_errors(uri: DatabaseURI, doing: str = "") -> Iterator[None]:
    """Turn driver errors into prodinf's error tree, naming only the masked URI.

    Bad credentials or a missing database: ``PermanentError`` (trying again cannot
    help). A server that does not answer or drops the connection:
    ``RemoteUnavailable`` (retry later). The driver's own message is left out
    because it can quote the URI.
    """
    where = f"{doing} {uri.masked()}".strip()
    try:
        yield
    except DBAPIError as exc:
        if _is_auth_failure(exc):
            raise PermanentError(
                f"{where}: access denied or no such database", uri=uri.masked()
            ) from None
        if isinstance(exc, OperationalError) or exc.connection_invalidated:
            raise RemoteUnavailable(
                f"{where}: server unavailable ({type(exc.orig).__name__})", uri=uri.masked()
            ) from None
        raise


def _parse_url(value: str) -> URL | str:
    """The SQLAlchemy URL ``value`` means, or what is wrong with it (without repeating it)."""
    if not isinstance(value, str) or "://" not in value:
        return "expected mysql://user@host/db, postgresql://user@host/db or sqlite:///path"
    scheme, rest = value.split("://", 1)
    driver = _DRIVERS.get(scheme.lower())
    if driver is None:
        return f"unsupported scheme {scheme[:20]!r} (use mysql, mariadb, postgresql or sqlite)"
    if driver != "sqlite" and rest.partition("/")[0].count("@") > 1:
        # make_url would read the rest of the password as part of the host
        return "the user or password holds an '@': write it as %40"
    try:
        url = make_url(f"{driver}://{rest}")
    except (ArgumentError, ValueError):
        return "not a valid URI"
    unsafe = sorted(key for key in url.query if key.lower() in _UNSAFE_OPTIONS)
    if driver == "sqlite":
        if not url.database or url.database == ":memory:":
            return "a SQLite URI needs a file path (sqlite:///path/to/file.db)"
        if url.query:
            # ?uri=true would make the path a SQLite URI naming any other file
            return "a SQLite URI takes no ?options: give the file's path only"
        return url
    if unsafe:
        return (
            f"the option {unsafe[0][:40]!r} is not allowed: it would connect elsewhere or "
            "read local files (name the host and port in the URI itself)"
        )
    if not url.host:
        return "names no host"
    if not url.database or not _NAME.match(url.database):
        return "needs a database name of letters, digits, _, $ or - (at most 63)"
    if driver == "mysql+pymysql" and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url


def validate_database_uri(value: str, info: ValidationInfo) -> str:
    """Pydantic validator: ``value`` if it parses as a ``DatabaseURI``, else ``ValueError``.

    At a submission (``info.context["settings"]``), a database that a job may not open
    (:meth:`DatabaseURI.refusal`) is refused too, so the caller gets a 400 naming the
    param before anything runs."""
    problem = _parse_url(value)
    if isinstance(problem, str):
        # Pydantic names the field itself; the message says what is wrong.
        raise ValueError(problem)
    settings = (info.context or {}).get("settings")
    if settings is not None:
        uri = DatabaseURI(problem)
        why = uri.refusal(settings)
        if why is not None:
            raise ValueError(f"{uri.masked()} {why}")
    return value


#: Longest database URI a param holds.
MAX_URI_LENGTH = MAX_URL_LENGTH

#: A params field holding a database URI: a bad one (or, at a submission, one a job may
#: not open) is a 400 naming the field.
DatabaseUriField = Annotated[
    str, StringConstraints(max_length=MAX_URI_LENGTH), AfterValidator(validate_database_uri)
]
