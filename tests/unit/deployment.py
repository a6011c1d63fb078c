"""The container deployment as the tests read it: docker/docker-compose.yml (services,
their commands, environment, ports), the Celery and gunicorn command lines in it,
docker/Dockerfile (its stages and instructions), and importing what they name with a
container's settings. Used by ``test_docker_compose.py`` and ``test_dockerfile.py``."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

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


def interpolate(text: str) -> str:
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
                return interpolate(rest[len(operator) :])
        if rest.startswith((":+", "+")):
            return ""
        return UNSET  # ${VAR}, ${VAR:?message}

    return _VARIABLE.sub(replace, text)


def _resolve(value: Any) -> Any:
    if isinstance(value, str):
        return interpolate(value)
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


def program_of(argv: list[str]) -> tuple[str, list[str]]:
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
        return program_of(self.argv)[0] in PRODINF_PROGRAMS or any(
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


def commands() -> Iterator[tuple[str, list[str]]]:
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
        program, args = program_of(argv)
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


def celery_of(svc: Service) -> CeleryCommand | None:
    return CeleryCommand.parse(svc.argv)


def gunicorn_of(argv: list[str]) -> tuple[list[str], str] | None:
    """(bind addresses, APP_MODULE) of a gunicorn command line (APP_MODULE is last)."""
    program, args = program_of(argv)
    if program != "gunicorn":
        return None
    return _option_values(args, "-b", "--bind"), (args[-1] if args else "")


def port_of(address: str) -> int | None:
    host, sep, port = address.rpartition(":")
    return int(port) if sep and port.isdigit() and not host.startswith("unix") else None


def listening_ports(argv: list[str]) -> set[int]:
    gunicorn = gunicorn_of(argv)
    if gunicorn:
        return {port for port in map(port_of, gunicorn[0]) if port is not None}
    celery = CeleryCommand.parse(argv)
    if celery and celery.subcommand == "flower":
        return {int(p) for p in _option_values(celery.args, None, "--port") or ["5555"]}
    return set()


def published_container_ports(svc: Service) -> set[int]:
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


def import_attr(import_module: Callable[[str], ModuleType], target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


def service_settings(svc: Service, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``prodinf.config.Settings()`` as the service's container would build it."""
    from prodinf.config import Settings

    with monkeypatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("PRODINF_")]:
            patch.delenv(name)
        for name, value in svc.env.items():
            if name.startswith("PRODINF_"):
                patch.setenv(name, value)
        return Settings()


def fail_on(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)
