"""``prodinf user ...`` and ``prodinf token ...``: who may use the portal and the API.

These run against the job store directly (whoever can run them can read the store),
so they are how the first admin is made: ``prodinf user add alice --role admin``.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from prodinf.cli.common import console, make_runtime, reports_errors
from prodinf.store.users import ROLES, Users, parse_expiry

__all__ = ["token", "user"]


def _users() -> Users:
    return Users(make_runtime().store)


def _password(from_stdin: bool, confirm: bool = True) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    return value


@click.group()
def user() -> None:
    """Users: each has a role (viewer, submitter, operator, admin) and may log in."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What they may do.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--no-password", is_flag=True, help="No login to the pages: tokens only.")
@reports_errors
def user_add(name: str, role: str, password_stdin: bool, no_password: bool) -> None:
    """Add user NAME with ROLE; their password is asked for (not echoed)."""
    password = None if no_password else _password(password_stdin)
    made = _users().add(name, role, password)
    click.echo(f"user {made.name} added, role {made.role}")


@user.command("list")
@reports_errors
def user_list() -> None:
    """Every user, their role and whether they may log in."""
    table = Table("name", "role", "login", "state", "created")
    for found in _users().all():
        table.add_row(
            escape(found.name),
            found.role,
            "password" if found.has_password else "tokens only",
            "disabled" if found.disabled else "active",
            found.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@user.command("set-role")
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
@reports_errors
def user_set_role(name: str, role: str) -> None:
    """Give user NAME another ROLE (it applies to their next request)."""
    changed = _users().set_role(name, role)
    click.echo(f"user {changed.name} is now {changed.role}")


@user.command("password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@reports_errors
def user_password(name: str, password_stdin: bool) -> None:
    """Set user NAME's password."""
    _users().set_password(name, _password(password_stdin))
    click.echo(f"password of {name} set")


@user.command("disable")
@click.argument("name")
@reports_errors
def user_disable(name: str) -> None:
    """Stop user NAME: they cannot log in, and their tokens stop working."""
    _users().set_disabled(name, True)
    click.echo(f"user {name} disabled")


@user.command("enable")
@click.argument("name")
@reports_errors
def user_enable(name: str) -> None:
    """Let disabled user NAME in again (their unexpired, unrevoked tokens work again)."""
    _users().set_disabled(name, False)
    click.echo(f"user {name} enabled")


@click.group()
def token() -> None:
    """API tokens: Authorization: Bearer <token>, shown once when made."""


@token.command("create")
@click.option("--user", "name", required=True, help="Whose token it is.")
@click.option("--read-only", is_flag=True, help="It may only read (acts as a viewer).")
@click.option("--expires", default="90d", show_default=True, help="90d, 12h, 30m or never.")
@click.option("--note", help="What it is for (shown in token list).")
@reports_errors
def token_create(name: str, read_only: bool, expires: str, note: str | None) -> None:
    """Make a token for a user and print it: it is never shown again."""
    secret, made = _users().create_token(
        name, read_only=read_only, expires_in=parse_expiry(expires, "--expires"), note=note
    )
    until = made.expires_at.strftime("%Y-%m-%d %H:%M UTC") if made.expires_at else "never"
    kind = "read-only" if made.read_only else "full"
    click.echo(f"token {made.id} of {made.user} ({kind}, expires {until}):", err=True)
    click.echo(secret)


@token.command("list")
@click.option("--user", "name", help="Only this user's tokens.")
@reports_errors
def token_list(name: str | None) -> None:
    """Every token: its id, user, scope, and when it was used and ends."""
    table = Table("id", "user", "scope", "expires", "last used", "state", "note")

    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if value is not None else "—"

    for found in _users().tokens(name):
        table.add_row(
            found.id,
            escape(found.user),
            "read-only" if found.read_only else "full",
            when(found.expires_at) if found.expires_at else "never",
            when(found.last_used_at),
            "revoked" if found.revoked_at else "active",
            escape(found.note or ""),
        )
    console.print(table)


@token.command("revoke")
@click.argument("token_id")
@reports_errors
def token_revoke(token_id: str) -> None:
    """Revoke token TOKEN_ID (its id, from token list): it stops working at once."""
    done = _users().revoke(token_id)
    click.echo(f"token {done.id} of {done.user} revoked")
