"""Static checks of the container deployment: docker/Dockerfile, docker/docker-compose.yml.

Docker does not run here. The files are read, and every name they hand to prodinf
(Celery app modules, queue names, the WSGI target, CLI subcommands, ports, settings)
is checked against the code, so a rename in the package fails this test instead of
a deploy. Each test collects every offender and reports them together.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
COMPOSE_FILE = DOCKER_DIR / "docker-compose.yml"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

EXPECTED_SERVICES = {
    "rabbitmq",
    "postgres",
    "migrate",
    "portal",
    "worker-handover",
    "worker-event",
    "worker-email",
    "worker-jobs",
    "beat",
    "flower",
}
PRODINF_PROGRAMS = {"prodinf", "celery", "gunicorn"}
#: Value of a compose variable that is required or has no default (tests ignore the host env).
UNSET = "unset-variable"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
RESTARTING = {"always", "unless-stopped"}


# -- compose ---------------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def _interpolate(text: str) -> str:
    """Resolve compose's ``$VAR``/``${VAR...}`` as if no variable were set."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return UNSET
        expr = match["braced"]
        name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", expr)
        rest = expr[name.end() :] if name else ""
        for operator in (":-", "-"):
            if rest.startswith(operator):
                return _interpolate(rest[len(operator) :])
        if rest.startswith((":+", "+")):
            return ""
        return UNSET  # ${VAR}, ${VAR:?message}

    return _VARIABLE.sub(replace, text)


def _resolve(value: Any) -> Any:
    if isinstance(value, str):
        return _interpolate(value)
    if isinstance(value, dict):
        return {key: _resolve(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item) for item in value]
    return value


def _argv(value: Any) -> list[str]:
    """A compose/Dockerfile command (string or list) as argv."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(part) for part in value]


def _program(argv: list[str]) -> tuple[str, list[str]]:
    """(program name, its arguments); ``python -m celery ...`` counts as ``celery``."""
    if not argv:
        return "", []
    name = os.path.basename(argv[0])
    if re.fullmatch(r"python[\d.]*", name) and len(argv) > 2 and argv[1] == "-m":
        return argv[2], argv[3:]
    return name, argv[1:]


@dataclass(frozen=True)
class Service:
    name: str
    spec: dict[str, Any]

    @property
    def builds_our_image(self) -> bool:
        build = self.spec.get("build")
        if build is None:
            return False
        if isinstance(build, str):
            context, dockerfile = build, "Dockerfile"
        else:
            context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
        root = (DOCKER_DIR / context).resolve()
        return root == REPO_ROOT and (root / dockerfile).resolve() == DOCKERFILE.resolve()

    @property
    def argv(self) -> list[str]:
        """What the container runs: entrypoint + command, else the image's CMD."""
        command = self.spec.get("command")
        if command is None and self.builds_our_image:
            return _argv(self.spec.get("entrypoint")) + dockerfile().cmd
        return _argv(self.spec.get("entrypoint")) + _argv(command)

    @property
    def env(self) -> dict[str, str]:
        environment = self.spec.get("environment") or {}
        if isinstance(environment, list):
            pairs = [item.partition("=") for item in environment]
            environment = {key: value if sep else None for key, sep, value in pairs}
        return {
            str(key): UNSET if value is None else str(value) for key, value in environment.items()
        }

    @property
    def runs_prodinf(self) -> bool:
        return _program(self.argv)[0] in PRODINF_PROGRAMS or any(
            key.startswith("PRODINF_") for key in self.env
        )

    @property
    def depends_on(self) -> dict[str, str]:
        """Dependency -> condition."""
        deps = self.spec.get("depends_on") or {}
        if isinstance(deps, list):
            return {name: "service_started" for name in deps}
        return {
            name: (opts or {}).get("condition", "service_started") for name, opts in deps.items()
        }

    @property
    def healthcheck_argv(self) -> list[str] | None:
        """The effective healthcheck command; None when there is none."""
        check = self.spec.get("healthcheck")
        if check is None:
            image = dockerfile().healthcheck if self.builds_our_image else None
            return image or None
        if check.get("disable"):
            return None
        test = check.get("test")
        if test is None:  # only timings: the image's test applies
            return (dockerfile().healthcheck if self.builds_our_image else None) or None
        if isinstance(test, str):
            return shlex.split(test)
        if test[0] == "NONE":
            return None
        if test[0] == "CMD-SHELL":
            return shlex.split(test[1])
        return [str(part) for part in test[1:]]

    @property
    def restarts(self) -> bool:
        return str(self.spec.get("restart", "no")) in RESTARTING


@cache
def compose() -> dict[str, Any]:
    data = _resolve(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), COMPOSE_FILE
    return data


def services() -> dict[str, Service]:
    return {name: Service(name, spec or {}) for name, spec in compose()["services"].items()}


def prodinf_services() -> list[Service]:
    return [svc for svc in services().values() if svc.runs_prodinf]


def _commands() -> Iterator[tuple[str, list[str]]]:
    """(where, argv) of every command a container runs: services, then the image's CMD."""
    for svc in services().values():
        yield svc.name, svc.argv
    yield "Dockerfile CMD", dockerfile().cmd


# -- celery / gunicorn command lines -----------------------------------------------

_CELERY_GLOBAL_VALUE_OPTIONS = {
    "-A", "--app", "-b", "--broker", "--result-backend", "--loader", "--config", "--workdir",
}  # fmt: skip


def _option_values(args: list[str], short: str | None, long: str) -> list[str]:
    """Values of an option given as ``-X v``, ``-Xv``, ``--long v`` or ``--long=v``."""
    values = []
    for i, token in enumerate(args):
        if token in (short, long) and i + 1 < len(args):
            values.append(args[i + 1])
        elif token.startswith(long + "="):
            values.append(token[len(long) + 1 :])
        elif short and token.startswith(short) and not token.startswith("--") and token != short:
            values.append(token[len(short) :])
    return values


@dataclass(frozen=True)
class CeleryCommand:
    app: str | None
    subcommand: str | None
    args: list[str]

    @classmethod
    def parse(cls, argv: list[str]) -> CeleryCommand | None:
        program, args = _program(argv)
        if program != "celery":
            return None
        apps = _option_values(args, "-A", "--app")
        skip_next, subcommand = False, None
        for i, token in enumerate(args):
            if skip_next:
                skip_next = False
            elif token in _CELERY_GLOBAL_VALUE_OPTIONS:
                skip_next = True
            elif not token.startswith("-"):
                subcommand, args = token, args[i + 1 :]
                break
        return cls(apps[0] if apps else None, subcommand, args)

    @property
    def queues(self) -> list[str]:
        return [
            q
            for value in _option_values(self.args, "-Q", "--queues")
            for q in value.split(",")
            if q
        ]

    @property
    def runs_beat(self) -> bool:
        return self.subcommand == "beat" or (
            self.subcommand == "worker" and ("-B" in self.args or "--beat" in self.args)
        )


def _celery(svc: Service) -> CeleryCommand | None:
    return CeleryCommand.parse(svc.argv)


def _gunicorn(argv: list[str]) -> tuple[list[str], str] | None:
    """(bind addresses, APP_MODULE) of a gunicorn command line (APP_MODULE is last)."""
    program, args = _program(argv)
    if program != "gunicorn":
        return None
    return _option_values(args, "-b", "--bind"), (args[-1] if args else "")


def _port(address: str) -> int | None:
    host, sep, port = address.rpartition(":")
    return int(port) if sep and port.isdigit() and not host.startswith("unix") else None


def _listening_ports(argv: list[str]) -> set[int]:
    gunicorn = _gunicorn(argv)
    if gunicorn:
        return {port for port in map(_port, gunicorn[0]) if port is not None}
    celery = CeleryCommand.parse(argv)
    if celery and celery.subcommand == "flower":
        return {int(p) for p in _option_values(celery.args, None, "--port") or ["5555"]}
    return set()


def _published_container_ports(svc: Service) -> set[int]:
    ports = set()
    for entry in svc.spec.get("ports") or []:
        target = entry.get("target") if isinstance(entry, dict) else str(entry).rsplit(":", 1)[-1]
        target = str(target).split("/")[0]
        if target.isdigit():
            ports.add(int(target))
    return ports


# -- Dockerfile --------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def _instructions(text: str) -> list[Instruction]:
    out, buffer = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        keyword, _, args = (buffer + line).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
        buffer = ""
    return out


def _exec_or_shell(args: str) -> list[str]:
    if args.startswith("["):
        try:
            return [str(part) for part in json.loads(args)]
        except json.JSONDecodeError:
            pass
    return shlex.split(args)


@dataclass(frozen=True)
class Dockerfile:
    stages: list[list[Instruction]]  # each starts with its FROM

    @property
    def final(self) -> list[Instruction]:
        return self.stages[-1]

    def _last(self, keyword: str) -> Instruction | None:
        found = [ins for ins in self.final if ins.keyword == keyword]
        return found[-1] if found else None

    def base_images(self) -> list[str]:
        """The external image each stage ultimately starts from (aliases resolved)."""
        aliases: dict[str, str] = {}
        bases = []
        for stage in self.stages:
            words = [w for w in stage[0].args.split() if not w.startswith("--")]
            image = aliases.get(words[0].lower(), words[0])
            if len(words) >= 3 and words[1].lower() == "as":
                aliases[words[2].lower()] = image
            bases.append(image)
        return bases

    @property
    def cmd(self) -> list[str]:
        ins = self._last("CMD")
        return _exec_or_shell(ins.args) if ins else []

    @property
    def entrypoint(self) -> Instruction | None:
        return self._last("ENTRYPOINT")

    @property
    def user(self) -> str | None:
        ins = self._last("USER")
        return ins.args.split(":")[0] if ins else None

    @property
    def exposed(self) -> set[int]:
        ports = set()
        for ins in self.final:
            if ins.keyword == "EXPOSE":
                ports |= {int(p.split("/")[0]) for p in ins.args.split()}
        return ports

    @property
    def healthcheck(self) -> list[str]:
        ins = self._last("HEALTHCHECK")
        if ins is None:
            return []
        match = re.match(r"(?:--[\w-]+=\S+\s+)*CMD\s+(.*)", ins.args, re.S)
        return _exec_or_shell(match[1].strip()) if match else []


@cache
def dockerfile() -> Dockerfile:
    stages: list[list[Instruction]] = []
    for ins in _instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if ins.keyword == "FROM":
            stages.append([ins])
        elif stages:
            stages[-1].append(ins)
    assert stages, f"{DOCKERFILE} has no FROM"
    return Dockerfile(stages)


# -- importing the code the files name ------------------------------------------------


@pytest.fixture
def repo_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Import ``prodinf`` from this checkout even when it is not installed."""
    monkeypatch.setattr(sys, "path", [str(REPO_ROOT), *sys.path])
    importlib.invalidate_caches()


@pytest.fixture
def import_app(
    repo_importable: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], ModuleType]]:
    """``importlib.import_module`` with PRODINF_* cleared and PRODINF_HOME in tmp_path."""
    for name in [name for name in os.environ if name.startswith("PRODINF_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PRODINF_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    repo_state = REPO_ROOT / ".prodinf"
    existed = repo_state.exists()

    from prodinf.config import get_settings

    get_settings.cache_clear()
    yield importlib.import_module
    get_settings.cache_clear()
    assert existed or not repo_state.exists(), (
        "importing the app modules created .prodinf/ in the repo"
    )


def _import_attr(import_module: Callable[[str], ModuleType], target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


def _service_settings(svc: Service, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``prodinf.config.Settings()`` as the service's container would build it."""
    from prodinf.config import Settings

    with monkeypatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("PRODINF_")]:
            patch.delenv(name)
        for name, value in svc.env.items():
            if name.startswith("PRODINF_"):
                patch.setenv(name, value)
        return Settings()


def _fail_on(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


# -- compose: services and wiring ---------------------------------------------------


def test_compose_defines_the_expected_services() -> None:
    missing = EXPECTED_SERVICES - set(services())
    assert not missing, f"services missing from {COMPOSE_FILE.name}: {sorted(missing)}"


def test_services_running_prodinf_build_from_the_dockerfile() -> None:
    assert {svc.name for svc in prodinf_services()} >= EXPECTED_SERVICES - {"rabbitmq", "postgres"}
    _fail_on(
        [
            f"{svc.name}: runs prodinf code but does not build context .. / docker/Dockerfile"
            for svc in prodinf_services()
            if not svc.builds_our_image
        ]
    )
    assert dockerfile().entrypoint is None, "these checks assume the image has no ENTRYPOINT"


def _has_path(graph: dict[str, Service], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name == goal:
            return True
        if name not in seen and name in graph:
            seen.add(name)
            todo.extend(graph[name].depends_on)
    return False


def test_depends_on_targets_exist_and_can_satisfy_their_condition() -> None:
    graph, problems = services(), []
    for svc in graph.values():
        for target, condition in svc.depends_on.items():
            where = f"{svc.name} -> {target} ({condition})"
            if target not in graph:
                problems.append(f"{where}: no such service")
            elif condition == "service_healthy" and graph[target].healthcheck_argv is None:
                problems.append(f"{where}: {target} has no healthcheck")
            elif condition == "service_completed_successfully" and graph[target].restarts:
                problems.append(f"{where}: {target} restarts, so it never completes")
            elif condition not in {
                "service_started", "service_healthy", "service_completed_successfully",
            }:  # fmt: skip
                problems.append(f"{where}: unknown condition")
            if any(_has_path(graph, dep, svc.name) for dep in svc.depends_on):
                problems.append(f"{svc.name}: depends_on cycle")
    _fail_on(sorted(set(problems)))


def test_prodinf_services_share_settings_that_reach_the_store_and_broker(
    repo_importable: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prodinf.config import Settings

    graph, problems = services(), []
    fields = {f"PRODINF_{name.upper()}" for name in Settings.model_fields}
    shared = ("PRODINF_DATABASE_URL", "PRODINF_BROKER_URL", "PRODINF_RESULT_BACKEND")
    shared += tuple(sorted(name for name in fields if name.startswith("PRODINF_QUEUE_")))
    seen: dict[tuple[str | None, ...], list[str]] = {}
    for svc in prodinf_services():
        env = svc.env
        problems += [
            f"{svc.name}: {name} is not a setting"
            for name in env
            if name.startswith("PRODINF_") and name not in fields
        ]
        try:
            _service_settings(svc, monkeypatch)
        except Exception as exc:  # pydantic.ValidationError
            problems.append(f"{svc.name}: its PRODINF_* settings do not load: {exc}")
        seen.setdefault(tuple(env.get(name) for name in shared), []).append(svc.name)
        # Every prodinf process opens the store; only Celery and the portal talk to the broker.
        uses_broker = _program(svc.argv)[0] in {"celery", "gunicorn"}
        for name in shared[:3]:
            if name == "PRODINF_RESULT_BACKEND" and name not in env:
                continue
            if not env.get(name):
                problems.append(f"{svc.name}: {name} unset, so it would use an embedded default")
                continue
            host = urlsplit(env[name]).hostname
            if host not in graph:
                problems.append(f"{svc.name}: {name} names host {host!r}, not a compose service")
            elif (name == "PRODINF_DATABASE_URL" or uses_broker) and not _has_path(
                graph, svc.name, host
            ):
                problems.append(f"{svc.name}: {name} needs {host} but does not depend on it")
    if len(seen) > 1:
        problems.append(f"services disagree on {', '.join(shared)}: {sorted(seen.values())}")
    _fail_on(problems)


def test_migrations_run_before_portal_and_workers() -> None:
    graph = services()
    migrate = {
        svc.name for svc in graph.values() if _program(svc.argv) == ("prodinf", ["db", "upgrade"])
    }
    assert migrate, "no service runs `prodinf db upgrade`"
    problems = [f"{name}: restarts, but is a one-shot" for name in migrate if graph[name].restarts]
    for svc in graph.values():
        celery = _celery(svc)
        serves = _gunicorn(svc.argv) or (celery and celery.subcommand == "worker")
        if serves and not any(
            svc.depends_on.get(name) == "service_completed_successfully" for name in migrate
        ):
            problems.append(f"{svc.name}: does not wait for {sorted(migrate)} to complete")
    _fail_on(problems)


# -- compose: celery -----------------------------------------------------------------


def test_celery_app_modules_expose_a_celery_app(import_app: Callable[[str], ModuleType]) -> None:
    from celery import Celery

    targets: dict[str, list[str]] = {}
    for svc in services().values():
        for argv in (svc.argv, svc.healthcheck_argv or []):
            celery = CeleryCommand.parse(argv)
            if celery is not None:
                targets.setdefault(celery.app or "<no -A>", []).append(svc.name)
    assert targets, "no celery commands found"
    problems = []
    for target, users in sorted(targets.items()):
        attr_target = target if ":" in target else f"{target}:app"
        try:
            app = _import_attr(import_app, attr_target)
        except Exception as exc:
            problems.append(f"{target} (used by {sorted(set(users))}): {exc!r}")
            continue
        if not isinstance(app, Celery):
            problems.append(f"{attr_target} is {type(app).__name__}, not a celery.Celery")
    _fail_on(problems)


def _workers() -> list[tuple[Service, CeleryCommand]]:
    return [
        (svc, celery)
        for svc in services().values()
        if (celery := _celery(svc)) is not None and celery.subcommand == "worker"
    ]


def test_worker_queues_are_configured_queue_names(
    repo_importable: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    problems = []
    workers = _workers()
    assert workers, "no celery worker services"
    for svc, celery in workers:
        configured = _service_settings(svc, monkeypatch).queues
        if not celery.queues:
            problems.append(f"{svc.name}: worker without -Q consumes Celery's default queue")
        for queue in celery.queues:
            if queue not in configured.values():
                problems.append(f"{svc.name}: -Q {queue} is not a configured queue {configured}")
        own = re.fullmatch(r"prodinf\.(\w+)_tasks", celery.app or "")
        if own and own[1] in configured and celery.queues != [configured[own[1]]]:
            problems.append(
                f"{svc.name}: {celery.app} should consume only {configured[own[1]]!r},"
                f" not {celery.queues}"
            )
    _fail_on(problems)


def test_each_queue_has_exactly_one_worker_service(
    repo_importable: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumers: dict[str, list[str]] = {}
    for svc, celery in _workers():
        by_name = {
            name: logical for logical, name in _service_settings(svc, monkeypatch).queues.items()
        }
        for queue in celery.queues:
            consumers.setdefault(by_name.get(queue, queue), []).append(svc.name)
    expected = {"handover", "event", "email", "jobs"}
    counts = {queue: consumers.get(queue, []) for queue in expected}
    assert all(len(names) == 1 for names in counts.values()), counts


def test_exactly_one_beat() -> None:
    beats = [svc for svc in services().values() if (c := _celery(svc)) and c.runs_beat]
    assert len(beats) == 1, f"beat runs in {[svc.name for svc in beats]}: periodic tasks need one"
    spec = beats[0].spec
    replicas = (spec.get("deploy") or {}).get("replicas", spec.get("scale", 1))
    assert int(replicas) == 1, f"{beats[0].name} has {replicas} replicas"


# -- gunicorn, the CLI and ports -----------------------------------------------------


def test_gunicorn_targets_are_flask_apps(import_app: Callable[[str], ModuleType]) -> None:
    from flask import Flask

    problems, seen = [], 0
    for where, argv in _commands():
        gunicorn = _gunicorn(argv)
        if gunicorn is None:
            continue
        seen += 1
        target = gunicorn[1]
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", target):
            problems.append(f"{where}: last argument {target!r} is not module:attr")
            continue
        try:
            app = _import_attr(import_app, target)
        except Exception as exc:
            problems.append(f"{where}: {target}: {exc!r}")
            continue
        if not isinstance(app, Flask):
            problems.append(f"{where}: {target} is {type(app).__name__}, not a flask.Flask")
    assert seen, "no gunicorn command found"
    _fail_on(problems)


def test_gunicorn_binds_an_exposed_port_on_all_interfaces() -> None:
    problems = []
    for where, argv in _commands():
        gunicorn = _gunicorn(argv)
        if gunicorn is None:
            continue
        if not gunicorn[0]:
            problems.append(f"{where}: no -b; gunicorn would bind 127.0.0.1:8000")
        for address in gunicorn[0]:
            host = address.rpartition(":")[0]
            port = _port(address)
            if host in LOOPBACK:
                problems.append(f"{where}: binds {address}, unreachable from outside the container")
            if port not in dockerfile().exposed:
                problems.append(
                    f"{where}: binds {address}, Dockerfile EXPOSEs {dockerfile().exposed}"
                )
    _fail_on(problems)


def test_published_ports_are_ports_the_service_listens_on() -> None:
    problems = []
    for svc in prodinf_services():
        listening = _listening_ports(svc.argv)
        problems += [
            f"{svc.name}: publishes container port {port}, listens on {sorted(listening)}"
            for port in sorted(_published_container_ports(svc) - listening)
        ]
    _fail_on(problems)


def test_prodinf_subcommands_exist(import_app: Callable[[str], ModuleType]) -> None:
    import click

    invocations = [
        (svc.name, _program(svc.argv)[1])
        for svc in services().values()
        if _program(svc.argv)[0] == "prodinf"
    ]
    assert invocations, "no `prodinf ...` command found"
    main = import_app("prodinf.cli").main
    assert isinstance(main, click.Group), f"prodinf.cli.main is {type(main).__name__}"
    problems = []
    for where, args in invocations:
        command: click.Command = main
        ctx, path = click.Context(main, info_name="prodinf"), ["prodinf"]
        for token in (arg for arg in args if not arg.startswith("-")):
            if not isinstance(command, click.Group):
                break
            sub = command.get_command(ctx, token)
            if sub is None:
                known = sorted(command.list_commands(ctx))
                problems.append(f"{where}: `{' '.join(path)}` has no command {token!r} ({known})")
                break
            command, ctx = sub, click.Context(sub, parent=ctx, info_name=token)
            path.append(token)
        else:
            if isinstance(command, click.Group):
                problems.append(f"{where}: `{' '.join(path)}` is a group, not a command")
    _fail_on(problems)


# -- Dockerfile ------------------------------------------------------------------------


def test_dockerfile_base_is_python_311_or_newer() -> None:
    problems = []
    for image in dockerfile().base_images():
        match = re.fullmatch(r"(?:[\w.-]+/)*python:(\d+)\.(\d+)\S*", image)
        if not match or (int(match[1]), int(match[2])) < (3, 11):
            problems.append(f"FROM {image}: not a python:3.11+ image")
    _fail_on(problems)


def test_dockerfile_installs_the_postgres_and_server_extras() -> None:
    runs = [ins.args for stage in dockerfile().stages for ins in stage if ins.keyword == "RUN"]
    installs = [args for args in runs if "pip install" in args]
    assert installs, "no RUN ... pip install"
    extras = [
        {
            extra.strip()
            for group in re.findall(r"\[([\w,\s-]+)\]", args)
            for extra in group.split(",")
        }
        for args in installs
    ]
    assert any({"postgres", "server"} <= found for found in extras), installs


def test_dockerfile_does_not_run_as_root() -> None:
    user = dockerfile().user
    assert user is not None, "no USER in the final stage: containers would run as root"
    assert user not in {"root", "0"}, f"USER {user}"


def test_dockerfile_sets_prodinf_home() -> None:
    env = " ".join(ins.args for ins in dockerfile().final if ins.keyword == "ENV")
    assert re.search(r"\bPRODINF_HOME[= ]/var/lib/prodinf\b", env), env


def test_image_healthcheck_probes_health_where_the_portal_listens() -> None:
    check = dockerfile().healthcheck
    assert check, "no HEALTHCHECK ... CMD in the final stage"
    assert os.path.basename(check[0]).startswith("python"), f"HEALTHCHECK runs {check[0]}"
    text = " ".join(check)
    assert not re.search(r"\b(curl|wget)\b", text), "python:*-slim has no curl or wget"
    port = re.search(r"://[^/\s:]+:(\d+)/health\b", text)
    assert port, f"HEALTHCHECK does not GET /health on an explicit port: {text}"
    assert int(port[1]) in _listening_ports(dockerfile().cmd), "HEALTHCHECK port != CMD's bind"
    # Every service from the image inherits it: those not serving /health must override it.
    _fail_on(
        [
            f"{svc.name}: inherits the image's HEALTHCHECK on :{port[1]}/health but does not"
            " serve it; set healthcheck (or disable: true)"
            for svc in services().values()
            if svc.builds_our_image
            and "healthcheck" not in svc.spec
            and int(port[1]) not in _listening_ports(svc.argv)
        ]
    )


# -- .dockerignore ---------------------------------------------------------------------


def _glob(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            out.append({"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])))
            i += 1
    return re.compile("".join(out))


def _dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (or a folder holding it) out of the context."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _glob(line.lstrip("!").strip().strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_build_inputs_and_drops_local_state() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    readme = project.get("readme")
    needed = ["pyproject.toml", "setup.py", "prodinf/__init__.py", "prodinf/config.py"]
    needed += [readme] if isinstance(readme, str) else []
    dropped = [
        ".git/HEAD", ".prodinf/prodinf.sqlite", ".venv/bin/python", "venv/bin/python",
        "prodinf/__pycache__/config.cpython-311.pyc", ".pytest_cache/README.md",
        ".mypy_cache/3.11/x.json", ".ruff_cache/CACHEDIR.TAG",
    ]  # fmt: skip
    assert [p for p in needed if _dockerignored(p)] == [], "excluded but needed by the build"
    assert [p for p in dropped if not _dockerignored(p)] == [], "sent to the build context"


def test_command_line_parsing_helpers() -> None:
    celery = CeleryCommand.parse(
        shlex.split("celery --app=prodinf.worker -b amqp://h// worker -Qa,b --queues c -l info")
    )
    assert celery == CeleryCommand(
        "prodinf.worker", "worker", ["-Qa,b", "--queues", "c", "-l", "info"]
    )
    assert celery.queues == ["a", "b", "c"]
    assert CeleryCommand.parse(["python", "-m", "celery", "-A", "m", "beat"]).runs_beat
    assert CeleryCommand.parse(shlex.split("celery -A m worker -B -Q x")).runs_beat
    assert _gunicorn(shlex.split("gunicorn --bind=0.0.0.0:8000 -w 2 m:app")) == (
        ["0.0.0.0:8000"],
        "m:app",
    )
    assert _listening_ports(shlex.split("celery -A m flower")) == {5555}
    assert _interpolate("a${X:-d}b${Y:?no}c$$Z${W}") == f"adb{UNSET}c$Z{UNSET}"
    assert Service("s", {"environment": ["A=1", "B"]}).env == {"A": "1", "B": UNSET}
