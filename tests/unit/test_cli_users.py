"""``prodinf user ...`` and ``prodinf token ...`` as an admin uses them, and the admin
API's writes (``/api/v1/users``, ``/api/v1/tokens``) doing the same over HTTP.

Given a SQLite store under a temporary ``PRODINF_HOME``: each command runs in-process
through click's ``CliRunner``, and the portal (``PRODINF_AUTH=users``) is Flask's test
client on the same store. When an admin adds users, changes their role, disables and
enables them, and makes and revokes tokens, then the API and the login page take or
refuse them as the command said.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient

from prodinf.cli import main
from prodinf.config import Settings, get_settings
from prodinf.portal import create_app
from prodinf.runtime import Runtime
from prodinf.store import upgrade
from prodinf.store.users import Users
from tests.pages import csrf

PASSWORD = "a-long-enough-password"
OTHER_PASSWORD = "another-long-password"
#: A token as ``prodinf token create`` prints it: ``prodinf_<id>_<secret>``.
TOKEN = re.compile(r"prodinf_[A-Za-z0-9]+_[A-Za-z0-9_-]+")
#: A job a submitter may submit; no worker runs it here.
JOB = {"kind": "http_get", "params": {"url": "http://127.0.0.1:9/x"}}


@pytest.fixture(autouse=True)
def cli_env(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Embedded defaults under ``home``, no PRODINF_* from the shell, a wide console."""
    for name in list(os.environ):
        if name.startswith("PRODINF_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PRODINF_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "300")  # rich tables on one line per row
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("prodinf.portal.auth_views.FAILED_DELAY", 0.0)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def app(home: Path) -> Iterator[Flask]:
    """The portal with authentication on, on the store the commands use."""
    made = create_app(Settings(home=home, auth="users"))
    runtime: Runtime = made.extensions["prodinf"]
    upgrade(runtime.store)
    yield made
    runtime.close()


def prodinf(*args: str, stdin: str | None = None) -> Result:
    """Run ``prodinf ARGS`` as a shell would, ``stdin`` on its standard input."""
    get_settings.cache_clear()
    result = CliRunner().invoke(main, list(args), input=stdin)
    get_settings.cache_clear()
    return result


def succeeded(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def refused(result: Result, *fragments: str) -> str:
    """A command that failed cleanly: non-zero, a message holding ``fragments``, no
    traceback; what it said on stderr."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    return result.stderr


def users_listed() -> dict[str, list[str]]:
    """``prodinf user list``: each row's cells (role, login, state, created) by name."""
    rows = [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in succeeded(prodinf("user", "list")).splitlines()
        if line.startswith("│")
    ]
    return {row[0]: row[1:] for row in rows}


def tokens_listed() -> dict[str, list[str]]:
    """``prodinf token list``: each row's cells (user, scope, expires, last used, state,
    note) by token id."""
    rows = [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in succeeded(prodinf("token", "list")).splitlines()
        if line.startswith("│")
    ]
    return {row[0]: row[1:] for row in rows}


def printed(result: Result) -> str:
    """The token a ``prodinf token create`` printed: its standard output, alone."""
    out = succeeded(result)
    assert TOKEN.fullmatch(out.rstrip("\n")) and out.count("\n") == 1, repr(out)
    return out.rstrip("\n")


def create_token(*args: str) -> str:
    return printed(prodinf("token", "create", *args))


def token_id(token: str) -> str:
    return token.split("_")[1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def me(client: FlaskClient, token: str) -> tuple[int, dict[str, str] | None]:
    answer = client.get("/api/v1/me", headers=bearer(token))
    return answer.status_code, answer.get_json() if answer.status_code == 200 else None


_ADDRESSES = itertools.count(1)


def logs_in(app: Flask, name: str, password: str) -> bool:
    """Whether the login page lets ``name`` in with ``password`` (each try from an
    address of its own: these are not the login's rate limit's business)."""
    client = app.test_client()
    form = {"csrf_token": csrf(client, "/login"), "name": name, "password": password}
    n = next(_ADDRESSES)
    answer = client.post(
        "/login", data=form, environ_base={"REMOTE_ADDR": f"10.0.{n // 250}.{n % 250}"}
    )
    assert answer.status_code in (302, 401), answer.get_data(as_text=True)
    return answer.status_code == 302


def test_an_admin_manages_a_user_from_the_command_line(app: Flask) -> None:
    """Given an empty store, when an admin adds a user with a password on stdin, then
    ``user list`` shows them with their role, and their token and password work; when
    their role is changed, the API sees the new one; when disabled, their token is a
    401 and their password no login; when enabled again, both work again; a new
    password replaces the old."""
    said = succeeded(prodinf("user", "add", "sue", "--role", "viewer", "--password-stdin",
                             stdin=f"{PASSWORD}\n"))  # fmt: skip
    assert said.strip() == "user sue added, role viewer"
    assert users_listed()["sue"][:3] == ["viewer", "password", "active"]
    token = create_token("--user", "sue")
    client = app.test_client()
    assert me(client, token) == (200, {"name": "sue", "role": "viewer", "auth": "users"})
    assert client.post("/api/v1/jobs", json=JOB, headers=bearer(token)).status_code == 403
    assert logs_in(app, "sue", PASSWORD)

    assert succeeded(prodinf("user", "set-role", "sue", "submitter")).strip() == (
        "user sue is now submitter"
    )
    assert users_listed()["sue"][0] == "submitter"
    assert me(client, token)[1] == {"name": "sue", "role": "submitter", "auth": "users"}
    assert client.post("/api/v1/jobs", json=JOB, headers=bearer(token)).status_code == 201

    succeeded(prodinf("user", "disable", "sue"))
    assert users_listed()["sue"][2] == "disabled"
    answer = client.get("/api/v1/me", headers=bearer(token))
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.post("/api/v1/jobs", json=JOB, headers=bearer(token)).status_code == 401
    assert not logs_in(app, "sue", PASSWORD)

    succeeded(prodinf("user", "enable", "sue"))
    assert users_listed()["sue"][2] == "active"
    assert me(client, token)[0] == 200
    assert logs_in(app, "sue", PASSWORD)

    succeeded(prodinf("user", "password", "sue", "--password-stdin", stdin=f"{OTHER_PASSWORD}\n"))
    assert logs_in(app, "sue", OTHER_PASSWORD) and not logs_in(app, "sue", PASSWORD)


def test_user_commands_refuse_bad_input_by_name(app: Flask) -> None:
    """Given a user, when one is added again, with a short password or an unknown role,
    or a missing one is changed, then each command fails with a message, no
    traceback, and nothing changes."""
    succeeded(prodinf("user", "add", "sue", "--role", "viewer", "--password-stdin",
                      stdin=f"{PASSWORD}\n"))  # fmt: skip

    refused(prodinf("user", "add", "sue", "--role", "admin", "--password-stdin",
                    stdin=f"{PASSWORD}\n"), "sue")  # fmt: skip
    refused(prodinf("user", "add", "bob", "--role", "viewer", "--password-stdin",
                    stdin="short\n"), "password", "12")  # fmt: skip
    refused(prodinf("user", "add", "bob", "--role", "root", "--password-stdin",
                    stdin=f"{PASSWORD}\n"), "--role")  # fmt: skip
    refused(prodinf("user", "set-role", "nobody", "admin"), "nobody")
    refused(prodinf("token", "create", "--user", "nobody"), "nobody")

    assert set(users_listed()) == {"sue"} and users_listed()["sue"][0] == "viewer"


def test_a_token_is_printed_once_alone_and_revoked(app: Flask) -> None:
    """Given a submitter, when an admin makes a full and a read-only token, then each is
    printed alone on stdout (what it is goes to stderr), works on the API, the
    read-only one is refused a POST (403) but may read; ``token list`` shows both,
    never the token; when one is revoked, it is a 401 and the other still works."""
    succeeded(prodinf("user", "add", "sue", "--role", "submitter", "--no-password"))

    made = prodinf("token", "create", "--user", "sue", "--note", "ci")
    full = printed(made)
    assert re.fullmatch(r"token \S+ of sue \(full, expires \d{4}-\d\d-\d\d \d\d:\d\d UTC\):\n",
                        made.stderr), made.stderr  # fmt: skip
    read_only = create_token("--user", "sue", "--read-only", "--expires", "never")
    client = app.test_client()

    assert client.post("/api/v1/jobs", json=JOB, headers=bearer(full)).status_code == 201
    answer = client.post("/api/v1/jobs", json=JOB, headers=bearer(read_only))
    assert answer.status_code == 403 and "submitter" in answer.get_json()["message"]
    assert client.get("/api/v1/jobs", headers=bearer(read_only)).status_code == 200
    assert me(client, read_only)[1] == {"name": "sue", "role": "viewer", "auth": "users"}

    listed = tokens_listed()
    assert listed[token_id(full)][:2] == ["sue", "full"]
    assert listed[token_id(read_only)][:3] == ["sue", "read-only", "never"]
    assert listed[token_id(full)][4:] == ["active", "ci"]
    shown = succeeded(prodinf("token", "list"))
    assert full not in shown and read_only not in shown

    revoked = succeeded(prodinf("token", "revoke", token_id(full)))
    assert revoked.strip() == f"token {token_id(full)} of sue revoked"
    assert tokens_listed()[token_id(full)][4] == "revoked"
    answer = client.post("/api/v1/jobs", json=JOB, headers=bearer(full))
    assert answer.status_code == 401 and "WWW-Authenticate" in answer.headers
    assert me(client, full)[0] == 401
    assert me(client, read_only)[0] == 200
    refused(prodinf("token", "revoke", "nosuchid"), "nosuchid")


@pytest.mark.parametrize("expires", ["-1d", "0d", "0m", "soon", "90", "90x", "1.5d", ""])
def test_a_bad_or_past_expiry_is_refused_naming_the_option(app: Flask, expires: str) -> None:
    """Given a user, when a token is asked for with an --expires in the past or one
    that is no 90d, 12h, 30m or never, then the command fails naming --expires, prints
    no token, and makes none."""
    succeeded(prodinf("user", "add", "sue", "--role", "submitter", "--no-password"))

    result = prodinf("token", "create", "--user", "sue", f"--expires={expires}")

    refused(result, "--expires", "90d, 12h, 30m", "never")
    assert result.stdout == ""
    assert tokens_listed() == {}


def test_short_expiries_are_taken(app: Flask) -> None:
    """Given a user, when tokens are made for 30 minutes, 12 hours and never, then each
    works and ``token list`` shows its end."""
    succeeded(prodinf("user", "add", "sue", "--role", "viewer", "--no-password"))
    client = app.test_client()

    for expires in ("30m", "12h", "never"):
        token = create_token("--user", "sue", "--expires", expires)
        assert me(client, token)[0] == 200
        ends = tokens_listed()[token_id(token)][2]
        assert (
            ends == "never"
            if expires == "never"
            else re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", ends)
        )


# -- the same through the admin API ------------------------------------------------------


def test_an_admin_manages_users_and_tokens_over_http(app: Flask) -> None:
    """Given an admin's token (made as the first admin is, on the command line), when
    they add a user, change their role, disable and enable them, and make and revoke
    tokens through the API, then those tokens are taken or refused as for the commands;
    a bad expiry is a 400 naming ``expires``, and a non-admin may do none of it."""
    succeeded(prodinf("user", "add", "ada", "--role", "admin", "--no-password"))
    admin = bearer(create_token("--user", "ada"))
    client = app.test_client()

    made = client.post("/api/v1/users", json={"name": "sue", "role": "viewer",
                                             "password": PASSWORD}, headers=admin)  # fmt: skip
    assert made.status_code == 201, made.get_data(as_text=True)
    assert made.get_json()["role"] == "viewer" and made.get_json()["has_password"] is True
    assert "password" not in made.get_json()
    assert users_listed()["sue"][0] == "viewer"
    assert client.post("/api/v1/users", json={"name": "sue", "role": "viewer"},
                       headers=admin).status_code == 409  # fmt: skip

    given = client.post("/api/v1/tokens", json={"user": "sue", "expires": "12h"}, headers=admin)
    assert given.status_code == 201, given.get_data(as_text=True)
    sue = given.get_json()["token"]
    assert TOKEN.fullmatch(sue) and given.get_json()["read_only"] is False
    assert client.post("/api/v1/jobs", json=JOB, headers=bearer(sue)).status_code == 403

    changed = client.patch("/api/v1/users/sue", json={"role": "submitter"}, headers=admin)
    assert changed.status_code == 200 and changed.get_json()["role"] == "submitter"
    assert client.post("/api/v1/jobs", json=JOB, headers=bearer(sue)).status_code == 201
    assert client.post("/api/v1/users", json={"name": "eve", "role": "admin"},
                       headers=bearer(sue)).status_code == 403  # fmt: skip

    assert (
        client.patch("/api/v1/users/sue", json={"disabled": True}, headers=admin).status_code == 200
    )
    assert me(client, sue)[0] == 401 and not logs_in(app, "sue", PASSWORD)
    assert (
        client.patch("/api/v1/users/sue", json={"disabled": False}, headers=admin).status_code
        == 200
    )
    assert me(client, sue)[0] == 200 and logs_in(app, "sue", PASSWORD)

    given = client.post("/api/v1/tokens", json={"user": "sue", "read_only": True}, headers=admin)
    assert given.status_code == 201 and given.get_json()["read_only"] is True
    read_only = given.get_json()["token"]
    assert client.post("/api/v1/jobs", json=JOB, headers=bearer(read_only)).status_code == 403
    assert me(client, read_only)[0] == 200
    listed = client.get("/api/v1/tokens", query_string={"user": "sue"}, headers=admin)
    assert {t["id"] for t in listed.get_json()} == {token_id(sue), token_id(read_only)}
    assert "token" not in listed.get_json()[0]

    gone = client.delete(f"/api/v1/tokens/{token_id(read_only)}", headers=admin)
    assert gone.status_code == 200 and gone.get_json()["revoked_at"] is not None
    assert me(client, read_only)[0] == 401 and me(client, sue)[0] == 200
    assert tokens_listed()[token_id(read_only)][4] == "revoked"

    for expires in ("-1d", "0d", "soon"):
        bad = client.post("/api/v1/tokens", json={"user": "sue", "expires": expires}, headers=admin)
        assert bad.status_code == 400 and bad.get_json()["field"] == "expires", bad.get_json()
    assert len(Users(app.extensions["prodinf"].store).tokens("sue")) == 2
