"""Static checks of docker/Dockerfile and .dockerignore: the base image, the extras
installed, the user, PRODINF_HOME, the health check, the build context; and the
command-line parsing the compose checks rely on.

Docker does not run here: the files are read and checked against the code and
docker-compose.yml. Each test collects every offender and reports them together.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib

from tests.unit.deployment import (
    DOCKERIGNORE,
    REPO_ROOT,
    UNSET,
    CeleryCommand,
    Service,
    dockerfile,
    fail_on,
    gunicorn_of,
    interpolate,
    listening_ports,
    services,
)

# -- Dockerfile ------------------------------------------------------------------------


def test_dockerfile_base_is_python_311_or_newer() -> None:
    """Given the Dockerfile, then every stage builds on Python 3.11 or newer."""
    problems = []
    for image in dockerfile().base_images():
        match = re.fullmatch(r"(?:[\w.-]+/)*python:(\d+)\.(\d+)\S*", image)
        if not match or (int(match[1]), int(match[2])) < (3, 11):
            problems.append(f"FROM {image}: not a python:3.11+ image")
    fail_on(problems)


def test_dockerfile_installs_the_postgres_and_server_extras() -> None:
    """Given the Dockerfile's pip install, then it installs prodinf with the extras a
    server deployment needs.
    """
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
    """Given the final stage, then its USER is not root."""
    user = dockerfile().user
    assert user is not None, "no USER in the final stage: containers would run as root"
    assert user not in {"root", "0"}, f"USER {user}"


def test_dockerfile_sets_prodinf_home() -> None:
    """Given the final stage, then PRODINF_HOME is /var/lib/prodinf."""
    env = " ".join(ins.args for ins in dockerfile().final if ins.keyword == "ENV")
    assert re.search(r"\bPRODINF_HOME[= ]/var/lib/prodinf\b", env), env


def test_image_healthcheck_probes_health_where_the_portal_listens() -> None:
    """Given the image's HEALTHCHECK, then it asks /health on the port the portal listens on."""
    check = dockerfile().healthcheck
    assert check, "no HEALTHCHECK ... CMD in the final stage"
    assert os.path.basename(check[0]).startswith("python"), f"HEALTHCHECK runs {check[0]}"
    text = " ".join(check)
    assert not re.search(r"\b(curl|wget)\b", text), "python:*-slim has no curl or wget"
    port = re.search(r"://[^/\s:]+:(\d+)/health\b", text)
    assert port, f"HEALTHCHECK does not GET /health on an explicit port: {text}"
    assert int(port[1]) in listening_ports(dockerfile().cmd), "HEALTHCHECK port != CMD's bind"
    # Every service from the image inherits it: those not serving /health must override it.
    fail_on(
        [
            f"{svc.name}: inherits the image's HEALTHCHECK on :{port[1]}/health but does not"
            " serve it; set healthcheck (or disable: true)"
            for svc in services().values()
            if svc.builds_our_image
            and "healthcheck" not in svc.spec
            and int(port[1]) not in listening_ports(svc.argv)
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
    """Given .dockerignore, then what the build needs is sent, and local state (git,
    .prodinf, virtual environments, caches) is not.
    """
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
    """Given celery, gunicorn and compose strings, then the helpers these checks rely on
    read them right.
    """
    celery = CeleryCommand.parse(
        shlex.split("celery --app=prodinf.worker -b amqp://h// worker -Qa,b --queues c -l info")
    )
    assert celery == CeleryCommand(
        "prodinf.worker", "worker", ["-Qa,b", "--queues", "c", "-l", "info"]
    )
    assert celery.queues == ["a", "b", "c"]
    assert CeleryCommand.parse(["python", "-m", "celery", "-A", "m", "beat"]).runs_beat
    assert CeleryCommand.parse(shlex.split("celery -A m worker -B -Q x")).runs_beat
    assert gunicorn_of(shlex.split("gunicorn --bind=0.0.0.0:8000 -w 2 m:app")) == (
        ["0.0.0.0:8000"],
        "m:app",
    )
    assert listening_ports(shlex.split("celery -A m flower")) == {5555}
    assert interpolate("a${X:-d}b${Y:?no}c$$Z${W}") == f"adb{UNSET}c$Z{UNSET}"
    assert Service("s", {"environment": ["A=1", "B"]}).env == {"A": "1", "B": UNSET}
