"""``prodinf db upgrade`` and ``prodinf config``."""

from __future__ import annotations

import click
from rich.table import Table

from prodinf.cli.common import console, load_settings, migrate_store, reports_errors
from prodinf.redact import redact_text

__all__ = ["config_cmd", "db"]


@click.group()
def db() -> None:
    """Manage the job store's schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision.")
@reports_errors
def db_upgrade(revision: str) -> None:
    """Create or migrate the job store's tables (safe to run again)."""
    from prodinf.store import JobStore

    settings = load_settings()
    store = JobStore(settings.store_url)
    try:
        migrate_store(store, revision)
    finally:
        store.dispose()
    click.echo(f"job store at {redact_text(settings.store_url)} is at revision {revision}")


@click.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def config_cmd(as_json: bool) -> None:
    """Print the effective settings, secrets masked."""
    values = load_settings().masked()
    if as_json:
        import json

        click.echo(json.dumps(values, indent=2, default=str))
        return
    table = Table("setting", "value", title="prodinf settings (PRODINF_<SETTING>)")
    for name, value in values.items():
        table.add_row(name, str(value))
    console.print(table)
