"""Serving the portal beyond loopback without authentication, under gunicorn (the
Dockerfile's and compose's way) and through the check it shares with ``prodinf up``
and ``prodinf portal`` (whose own processes are tried in test_login.py).

Given ``gunicorn -c python:prodinf.gunicorn_config -b 0.0.0.0:PORT prodinf.wsgi:app`` as
a real process, when authentication is off, then it refuses to start as ``prodinf
portal --host 0.0.0.0`` does, naming ``PRODINF_AUTH``, unless ``PRODINF_INSECURE`` lets
it, which it says in the log; with authentication on it serves. The hook's reading of
``--bind`` (unix sockets, inherited ones, several addresses) is tried without a process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from prodinf import gunicorn_config
from prodinf.config import Settings, get_settings
from prodinf.exceptions import ValidationError
from prodinf.portal.hardening import refuse_an_open_portal
from tests.loopback import free_port
from tests.waiting import wait_until

SECRET_KEY = "k" * 40


def _env(home: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRODINF_", "PROMETHEUS_"))}
    env.update(PRODINF_HOME=str(home), PRODINF_SECRET_KEY=SECRET_KEY)
    env.update({f"PRODINF_{name.upper()}": value for name, value in settings.items()})
    return env


def _gunicorn(home: Path, port: int, **settings: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:prodinf.gunicorn_config",
         "--no-control-socket", "-b", f"0.0.0.0:{port}", "prodinf.wsgi:app"],
        env=_env(home, **settings),
        cwd=home.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def _health(port: int) -> int | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code
    except requests.ConnectionError:
        return None


def _serves(home: Path, **settings: str) -> str:
    """Start gunicorn on 0.0.0.0 with ``settings``, wait for ``/health`` to answer 200,
    stop it; what it wrote."""
    port = free_port()
    served = _gunicorn(home, port, **settings)
    try:
        wait_until(lambda: _health(port) == 200 or served.poll() is not None, 120,
                   "gunicorn to answer /health")  # fmt: skip
        assert served.poll() is None, served.communicate()[0]
    finally:
        served.terminate()
        out, _ = served.communicate(timeout=60)
    return out


def test_gunicorn_refuses_to_serve_openly_beyond_loopback(home: Path) -> None:
    """Given PRODINF_AUTH unset (none), when gunicorn is started on 0.0.0.0, then it
    exits non-zero before listening, saying why and naming PRODINF_AUTH, and how to
    turn authentication on or run open anyway (PRODINF_INSECURE)."""
    port = free_port()
    refused = _gunicorn(home, port)
    out, _ = refused.communicate(timeout=120)

    assert refused.returncode != 0, out
    assert "Error: the portal would listen on 0.0.0.0 with PRODINF_AUTH=none" in out
    assert "PRODINF_AUTH=users" in out and "PRODINF_INSECURE=true" in out
    assert "Traceback" not in out and "Listening at" not in out


def test_gunicorn_serves_openly_when_told_insecure_and_says_so(home: Path) -> None:
    """Given PRODINF_AUTH none and PRODINF_INSECURE=true, when gunicorn is started on
    0.0.0.0, then it serves (/health answers 200) and its log says INSECURE."""
    out = _serves(home, insecure="true")

    said = [line for line in out.splitlines() if "INSECURE" in line]
    assert said and "WARNING" in said[0] and "0.0.0.0" in said[0], out
    assert "PRODINF_AUTH=none" in said[0] and "PRODINF_INSECURE=true" in said[0]


def test_gunicorn_serves_with_authentication_on(home: Path) -> None:
    """Given PRODINF_AUTH=users, when gunicorn is started on 0.0.0.0, then it serves
    (/health answers 200) and warns of nothing insecure."""
    out = _serves(home, auth="users")

    assert "INSECURE" not in out


def test_gunicorn_refuses_the_built_in_secret_key_beyond_loopback(home: Path) -> None:
    """Given authentication on but PRODINF_SECRET_KEY unset, when gunicorn is started on
    0.0.0.0, then it exits non-zero naming PRODINF_SECRET_KEY (the portal under gunicorn
    cannot see where it listens; the hook can)."""
    env = _env(home, auth="users")
    del env["PRODINF_SECRET_KEY"]
    refused = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "python:prodinf.gunicorn_config",
         "--no-control-socket", "-b", f"0.0.0.0:{free_port()}", "prodinf.wsgi:app"],
        env=env, cwd=home.parent, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert refused.returncode != 0, refused.stderr
    assert "Error:" in refused.stderr and "PRODINF_SECRET_KEY" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.fixture
def env_settings(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The settings on_starting reads (the environment of _env: auth none); what it does
    to the process beyond the check (its log handler, the metrics folder) not done."""
    for name in list(os.environ):
        if name.startswith(("PRODINF_", "PROMETHEUS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PRODINF_HOME", str(home))
    monkeypatch.setenv("PRODINF_SECRET_KEY", SECRET_KEY)
    monkeypatch.setattr(gunicorn_config, "_configure_logging", lambda *_: None)
    monkeypatch.setattr(
        gunicorn_config,
        "_metrics",
        SimpleNamespace(share=lambda *_, **__: None, folder=lambda: None),
    )
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _starting(*binds: str) -> None:
    gunicorn_config.on_starting(
        SimpleNamespace(cfg=SimpleNamespace(bind=list(binds)), pidfile=None)
    )


@pytest.mark.parametrize(
    "binds",
    [
        ("127.0.0.1:5000",),
        ("localhost:5000",),
        ("[::1]:5000",),
        ("unix:/run/prodinf/portal.sock",),
        ("unix:/run/prodinf/portal.sock", "127.0.0.1:5000"),
    ],
)
def test_local_binds_start_with_authentication_off(
    env_settings: None, binds: tuple[str, ...]
) -> None:
    """Given PRODINF_AUTH none, when every --bind is loopback or a unix socket, then the
    hook lets gunicorn start."""
    _starting(*binds)


@pytest.mark.parametrize(
    ("binds", "named"),
    [
        (("0.0.0.0:5000",), "0.0.0.0"),
        ((":5000",), "0.0.0.0"),  # gunicorn's ":PORT" is every interface
        (("[::]:5000",), "::"),
        (("unix:/run/prodinf/portal.sock", "10.1.2.3:5000"), "10.1.2.3"),
        (("127.0.0.1:5000", "portal.example.org:5000"), "portal.example.org"),
        (("fd://3",), "fd://3"),  # an inherited socket: where it listens is not known
    ],
)
def test_any_bind_beyond_loopback_refuses_with_authentication_off(
    env_settings: None, binds: tuple[str, ...], named: str
) -> None:
    """Given PRODINF_AUTH none, when any --bind is beyond loopback, then the hook
    refuses (gunicorn prints the message and exits 1), naming the address and
    PRODINF_AUTH."""
    with pytest.raises(RuntimeError) as refused:
        _starting(*binds)

    assert named in str(refused.value) and "PRODINF_AUTH=none" in str(refused.value)


def test_the_setting_does_what_the_flag_does(caplog: pytest.LogCaptureFixture) -> None:
    """Given PRODINF_AUTH none beyond loopback, then the check shared by prodinf up,
    prodinf portal and gunicorn refuses without --insecure or PRODINF_INSECURE, naming
    both; with either it lets the portal serve, logging the warning that names which."""
    beyond = Settings(auth="none")

    with pytest.raises(ValidationError) as refused:
        refuse_an_open_portal(beyond, "0.0.0.0", flag="--insecure")
    assert refused.value.field == "PRODINF_AUTH"
    assert "--insecure (or PRODINF_INSECURE=true)" in refused.value.message

    with caplog.at_level(logging.WARNING, logger="prodinf.portal"):
        by_flag = refuse_an_open_portal(beyond, "0.0.0.0", insecure=True, flag="--insecure")
        by_setting = refuse_an_open_portal(
            Settings(auth="none", insecure=True), "0.0.0.0", flag="--insecure"
        )
    assert by_flag is not None and "(--insecure)" in by_flag
    assert by_setting is not None and "(PRODINF_INSECURE=true)" in by_setting
    assert [r.getMessage() for r in caplog.records] == [by_flag, by_setting]
    assert refuse_an_open_portal(beyond, "127.0.0.1") is None
    assert refuse_an_open_portal(Settings(auth="users"), "0.0.0.0") is None
