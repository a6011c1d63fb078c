"""``prodinf up | worker | scheduler | portal``: run prodinf's processes."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click

from prodinf import metrics
from prodinf.cli.common import load_settings, make_runtime, reports_errors, with_start_folder
from prodinf.config import Settings
from prodinf.engine.logformat import configure as configure_logging
from prodinf.exceptions import ValidationError
from prodinf.files import open_private, private_folder
from prodinf.redact import redact_text

__all__ = ["portal", "scheduler", "up", "worker"]


def _queues(settings: Settings, names: str) -> list[str]:
    """Logical queue names (``email``) or configured ones, comma-separated."""
    return [settings.queue_for(name.strip()) for name in names.split(",") if name.strip()]


Tell = Callable[..., None]


def _teller(settings: Settings) -> Tell:
    """How ``up`` and ``portal`` say what they do: ``tell(text, err=False)`` on the
    terminal, or with ``PRODINF_LOG_FORMAT=json`` as log lines (a warning for ``err``),
    so that every line they write is JSON."""
    logger = logging.getLogger("prodinf.up")

    def tell(text: str, *, err: bool = False) -> None:
        if settings.log_format == "json":
            logger.log(logging.WARNING if err else logging.INFO, "%s", text)
        else:
            click.echo(text, err=err)

    return tell


def _stop_on_sigterm() -> None:
    """SIGTERM and SIGINT (even if inherited as ignored, as in ``prodinf up &``) stop us."""

    def raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, raise_interrupt)


def _refuse_a_used_port(host: str, port: int) -> int:
    """The port to listen on (``port``, or a free one for 0); ``ValidationError`` naming
    ``--port`` if ``host:port`` cannot be listened on (Werkzeug would print its own hint
    and exit)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            return int(probe.getsockname()[1])
    except OSError as exc:
        raise ValidationError(
            f"cannot listen on {host}:{port} ({exc.strerror}): is another prodinf running "
            "there? Stop it, or start this one with --port N (or PRODINF_PORT)",
            field="--port",
        ) from None


def _refuse_an_open_portal(settings: Settings, host: str, insecure: bool) -> None:
    """Refuse to serve beyond loopback with ``PRODINF_AUTH=none``, naming the setting;
    ``--insecure`` (or ``PRODINF_INSECURE``) serves anyway, saying so on every start: in
    the log, and on the console too unless every line is JSON."""
    from prodinf.portal.hardening import refuse_an_open_portal

    warning = refuse_an_open_portal(settings, host, insecure=insecure, flag="--insecure")
    if warning is not None and settings.log_format != "json":
        click.echo(f"WARNING: {warning}", err=True)


def _own_url(host: str, port: int) -> str:
    """The portal's address as others on this machine reach it."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{port}"


def _bind_embedded_queues(celery: Any, nodenames: list[str]) -> None:
    """Bind the task queues and each worker's control queue before the workers start.

    kombu's filesystem transport creates an exchange's binding file empty and only
    then locks and fills it. Workers started together on a fresh home race for it:
    one that reads it between another's create and write dies (``JSONDecodeError``),
    two that both find it missing each write their own binding over the other's.
    Binding to a file that exists is serialized by its lock, so ``up`` makes the
    files (task queues, and each worker's control queue) before starting workers.
    """
    from celery.utils.nodenames import host_format

    with celery.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in celery.conf.task_queues:
            queue(channel).declare()
        for name in nodenames:
            celery.control.mailbox.get_queue(host_format(name))(channel).declare()


class Child:
    """A supervised child process: restarted if it dies, stopped gracefully on exit."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log: Path, tell: Tell
    ) -> None:
        self.name, self.args, self.env, self.log, self.tell = name, args, env, log, tell
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        out: IO[bytes] = os.fdopen(open_private(self.log, append=True), "ab")  # 0600
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.restarts += 1
            self.tell(
                f"{self.name} exited with {self.proc.returncode}; restarting (see {self.log})",
                err=True,
            )
            self.start()

    def terminate(self) -> None:
        # Only the child itself: a Celery worker stops its own pool gracefully.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@click.command()
@click.option("--host", default=None, help="Portal address [PRODINF_HOST, 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Portal port [PRODINF_PORT, 5000].")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=None,
    help="Processes per worker [PRODINF_WORKER_CONCURRENCY].",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Serve beyond loopback with PRODINF_AUTH=none (anyone may do anything); "
    "PRODINF_INSECURE=true does the same.",
)
@reports_errors
def up(host: str | None, port: int | None, concurrency: int | None, insecure: bool) -> None:
    """Start everything on this machine: portal, a worker per queue, and the scheduler.

    With no PRODINF_* settings it runs on embedded defaults under its home (the
    closest .prodinf folder up from here, else ~/.prodinf): a SQLite store and a
    filesystem broker, no server needed. Ctrl-C stops it all.
    """
    from prodinf.portal import create_app
    from prodinf.portal.hardening import make_server, refuse_built_in_secret

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    tell = _teller(settings)
    host, port = host or settings.host, settings.port if port is None else port
    _refuse_an_open_portal(settings, host, insecure)
    refuse_built_in_secret(settings.model_copy(update={"host": host}))
    port = _refuse_a_used_port(host, port)
    public_url = settings.public_url or _own_url(host, port)  # mails link to this portal
    # the portal checks where it listens (the secret key, its own names): --host counts
    settings = settings.model_copy(update={"public_url": public_url, "host": host})
    settings = with_start_folder(settings)  # and every child's, through the environment
    home = settings.home.resolve()
    logs = home / "logs"
    rt = make_runtime(settings, migrate=True)  # first: it reports a home it cannot create
    # Every process here counts into one folder, which the portal's /metrics sums; what
    # a run before this one counted goes (its processes have ended).
    metrics.share(metrics.folder() or home / "metrics", clean=True)
    private_folder(logs)
    env = {
        **os.environ,
        "PRODINF_HOME": str(home),
        "PRODINF_PUBLIC_URL": public_url,
        "PRODINF_SQLITE_ROOTS": ",".join(settings.sqlite_roots or []),
        "PRODINF_LOG_FORMAT": settings.log_format,
    }
    env.pop("PRODINF_METRICS_PORT", None)  # the portal serves the workers' counts
    level = settings.log_level
    celery = [sys.executable, "-m", "celery", "-A", "prodinf.worker"]
    nodenames = {logical: f"{logical}@%h" for logical in settings.queues}
    children = [
        Child(
            f"worker {queue}",
            [
                *celery,
                "worker",
                "-Q",
                queue,
                "-n",
                nodenames[logical],
                "-l",
                level,
                "-c",
                str(concurrency or settings.worker_concurrency),
                "-P",
                settings.worker_pool,
                "--without-gossip",
                "--without-mingle",
            ],
            env,
            logs / f"worker-{logical}.log",
            tell,
        )
        for logical, queue in settings.queues.items()
    ]
    children.append(
        Child(
            "scheduler",
            [*celery, "beat", "-l", level, "-s", str(home / "celerybeat-schedule")],
            env,
            logs / "scheduler.log",
            tell,
        )
    )
    if settings.is_embedded_broker:
        _bind_embedded_queues(rt.celery, list(nodenames.values()))
    app = create_app(settings, runtime=rt)
    server = make_server(host, port, app)
    stop = threading.Event()

    def supervise() -> None:
        while not stop.wait(2.0):
            for child in children:
                child.check()

    watcher = threading.Thread(target=supervise, daemon=True, name="prodinf-supervisor")
    # The children run in their own sessions, so a Ctrl-C reaches only us: from the
    # first child started, a signal must land in the try below, which stops them all.
    _stop_on_sigterm()
    try:
        for child in children:
            child.start()
        watcher.start()
        url = f"http://{server.host}:{server.port}"
        tell(f"prodinf is up at {url}  (API {url}/api/v1, docs {url}/api/docs)")
        tell(f"home {home} (PRODINF_HOME; `prodinf config` shows the one a shell finds)")
        tell(
            f"store {redact_text(settings.store_url)}, broker {redact_text(settings.broker)}, "
            f"logs in {logs}. Ctrl-C stops everything."
        )
        folders = ", ".join(str(folder) for folder in settings.sqlite_folders)
        tell(f"SQLite files jobs open: under {folders} (PRODINF_SQLITE_ROOTS)")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        tell("stopping: letting workers finish their current step...")
        stop.set()
        if watcher.is_alive():
            watcher.join()
        server.server_close()
        for child in children:
            child.terminate()
        deadline = time.monotonic() + 30
        for child in children:
            child.wait(deadline)
        rt.close()
        tell("stopped.")


@click.command()
@click.option(
    "-Q",
    "--queues",
    default="handover,event,email,jobs",
    show_default=True,
    help="Queues to consume (logical or configured names), comma-separated.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 256),
    default=None,
    help="Worker processes [PRODINF_WORKER_CONCURRENCY].",
)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["prefork", "threads", "solo"]),
    default=None,
    help="Celery pool [PRODINF_WORKER_POOL].",
)
@click.option("-n", "--hostname", default=None, help="Worker node name.")
@reports_errors
def worker(queues: str, concurrency: int | None, pool: str | None, hostname: str | None) -> None:
    """Run one Celery worker on the given queues."""
    from prodinf.celery_app import create_celery

    settings = load_settings()
    app = create_celery(settings)
    argv = [
        "worker",
        "-Q",
        ",".join(_queues(settings, queues)),
        "-l",
        settings.log_level,
        "-c",
        str(concurrency or settings.worker_concurrency),
        "-P",
        pool or settings.worker_pool,
    ]
    if hostname:
        argv += ["-n", hostname]
    app.worker_main(argv)


@click.command()
@reports_errors
def scheduler() -> None:
    """Run the scheduler (Celery beat): the periodic reconciler."""
    from prodinf.celery_app import create_celery

    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    create_celery(settings).start(
        ["beat", "-l", settings.log_level, "-s", str(settings.home / "celerybeat-schedule")]
    )


@click.command()
@click.option("--host", default=None, help="Address [PRODINF_HOST].")
@click.option("--port", type=int, default=None, help="Port [PRODINF_PORT].")
@click.option(
    "--insecure",
    is_flag=True,
    help="Serve beyond loopback with PRODINF_AUTH=none (anyone may do anything); "
    "PRODINF_INSECURE=true does the same.",
)
@reports_errors
def portal(host: str | None, port: int | None, insecure: bool) -> None:
    """Serve the portal alone (for production use gunicorn prodinf.wsgi:app)."""
    from prodinf.portal import create_app
    from prodinf.portal.hardening import make_server, refuse_built_in_secret

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    host, port = host or settings.host, settings.port if port is None else port
    _refuse_an_open_portal(settings, host, insecure)
    refuse_built_in_secret(settings.model_copy(update={"host": host}))
    _refuse_a_used_port(host, port)
    settings = settings.model_copy(update={"host": host})  # what the portal checks
    server = make_server(host, port, create_app(settings, runtime=make_runtime(settings)))
    _teller(settings)(f"portal at http://{server.host}:{server.port}")
    _stop_on_sigterm()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
