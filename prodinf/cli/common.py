"""What every command shares: the runtime, error reporting, the console."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from prodinf.config import Settings, get_settings
from prodinf.exceptions import ProdinfError

__all__ = ["console", "make_runtime", "reports_errors"]

console = Console()
F = TypeVar("F", bound=Callable[..., Any])


def make_runtime(settings: Settings | None = None, *, migrate: bool | None = None) -> Any:
    """A runtime for a command. The embedded store is migrated on first use."""
    from prodinf.celery_app import create_celery
    from prodinf.runtime import Runtime
    from prodinf.store import upgrade

    settings = settings or get_settings()
    rt = Runtime(settings, create_celery(settings))
    if migrate if migrate is not None else settings.database_url is None:
        upgrade(rt.store)
    return rt


def reports_errors(fn: F) -> F:
    """Turn prodinf errors into a one-line message and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProdinfError as exc:
            where = f" ({exc.field})" if exc.field else ""
            raise click.ClickException(f"{exc.message}{where}") from None

    return wrapper  # type: ignore[return-value]
