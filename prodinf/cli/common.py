"""What every command shares: settings, the runtime, error reporting, the console."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError as SettingsError
from rich.console import Console

from prodinf.config import Settings, get_settings
from prodinf.exceptions import ProdinfError, StoreUnavailable, ValidationError
from prodinf.kinds.rules_files import check_rules_files

__all__ = [
    "console",
    "load_settings",
    "make_runtime",
    "migrate_store",
    "reports_errors",
    "said",
    "warn_unless_consumed",
    "with_start_folder",
]

console = Console()
F = TypeVar("F", bound=Callable[..., Any])


def load_settings() -> Settings:
    """The process's settings, with the rules files they name checked; a bad
    ``PRODINF_*`` value or rules file is a one-line error naming it."""
    try:
        settings = get_settings()
    except SettingsError as exc:
        # Only the setting's name and what is wrong: the value may be a secret.
        problems = "; ".join(
            f"PRODINF_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise click.ClickException(f"invalid setting {problems}") from None
    try:
        check_rules_files(settings)
    except ValidationError as exc:
        raise click.ClickException(exc.message) from None
    return settings


def with_start_folder(settings: Settings) -> Settings:
    """``settings`` whose SQLite roots, when ``PRODINF_SQLITE_ROOTS`` is not set, also hold
    the folder this command was started in (unless it is the file system's root).

    ``prodinf up`` and the commands that submit work in a shell use it: on one machine the
    databases one works on lie there (the README's ``sqlite:///production/...``), and
    ``up``'s workers run in that folder too. A portal or a worker started on its own
    (``prodinf portal``, ``prodinf worker``, gunicorn) keeps the setting's folders."""
    if settings.sqlite_roots is not None:
        return settings
    here = Path.cwd().resolve()
    roots = [str(folder) for folder in settings.sqlite_folders]
    if here != Path(here.anchor):
        roots.append(str(here))
    return settings.model_copy(update={"sqlite_roots": roots})


def migrate_store(store: Any, revision: str = "head") -> None:
    """Bring the store's schema to ``revision``; a store that cannot be reached or a
    revision that does not exist is a ``ProdinfError``, not a traceback."""
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    from prodinf.store import upgrade

    store.ping()  # StoreUnavailable, without the URL's password, if it cannot be reached
    said = logging.getLogger("alembic")
    level = said.level
    said.setLevel(logging.WARNING)  # a line per migration is noise before `prodinf up`'s own
    try:
        upgrade(store, revision)
    except CommandError as exc:
        raise ValidationError(str(exc), field="--revision") from None
    except DBAPIError as exc:
        raise StoreUnavailable(
            f"could not migrate the job store ({store.dialect}): {type(exc.orig).__name__}"
        ) from None
    finally:
        said.setLevel(level)


def make_runtime(settings: Settings | None = None, *, migrate: bool | None = None) -> Any:
    """A runtime for a command. The embedded store is migrated on first use."""
    from prodinf.celery_app import create_celery
    from prodinf.runtime import Runtime

    settings = settings or with_start_folder(load_settings())
    try:
        rt = Runtime(settings, create_celery(settings))
    except OSError as exc:  # the embedded broker's folders under PRODINF_HOME
        raise click.ClickException(
            f"cannot create {exc.filename or settings.home}: {exc.strerror or exc} (PRODINF_HOME)"
        ) from None
    if migrate if migrate is not None else settings.database_url is None:
        migrate_store(rt.store)
    return rt


def warn_unless_consumed(rt: Any, kind: str) -> None:
    """Say on stderr when no worker of ``kind``'s queue has used the store of late: the
    work just sent waits (most often, this shell found another store than the workers)."""
    queue = rt.settings.queue_for(rt.registry.get(kind).queue)
    warning = rt.unconsumed(queue)
    if warning is not None:
        click.echo(f"warning: {warning}", err=True)


def said(exc: ProdinfError) -> str:
    """The one line a command prints for ``exc``: its message, led by the field it names
    unless the message names it already (``no job 'x': give its id ...`` needs no
    ``(id)``; ``src_uri: 'x' matches no naming rule``)."""
    field = exc.field
    if not field or field in exc.message or field.rpartition(".")[2] in exc.message:
        return exc.message
    return f"{field}: {exc.message}"


def reports_errors(fn: F) -> F:
    """Turn prodinf errors into a one-line message and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProdinfError as exc:
            raise click.ClickException(said(exc)) from None

    return wrapper  # type: ignore[return-value]
