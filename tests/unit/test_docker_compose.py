"""Static checks of docker/docker-compose.yml: its services, their wiring, the Celery
workers and beat, gunicorn, the CLI subcommands and the ports.

Docker does not run here. The file is read, and every name it hands to prodinf
(Celery app modules, queue names, the WSGI target, CLI subcommands, ports, settings)
is checked against the code, so a rename in the package fails this test instead of
a deploy. Each test collects every offender and reports them together.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType
from urllib.parse import urlsplit

import pytest

from tests.unit.deployment import (
    COMPOSE_FILE,
    EXPECTED_SERVICES,
    LOOPBACK,
    CeleryCommand,
    Service,
    celery_of,
    commands,
    dockerfile,
    fail_on,
    gunicorn_of,
    import_app,
    import_attr,
    listening_ports,
    port_of,
    prodinf_services,
    program_of,
    published_container_ports,
    repo_importable,
    service_settings,
    services,
)

__all__ = ["import_app", "repo_importable"]  # fixtures


# -- compose: services and wiring ---------------------------------------------------


def test_compose_defines_the_expected_services() -> None:
    """Given docker-compose.yml, then it defines every service a deployment needs."""
    missing = EXPECTED_SERVICES - set(services())
    assert not missing, f"services missing from {COMPOSE_FILE.name}: {sorted(missing)}"


def test_services_running_prodinf_build_from_the_dockerfile() -> None:
    """Given the services that run prodinf, celery or gunicorn, then each builds from
    docker/Dockerfile, whose image has no ENTRYPOINT.
    """
    assert {svc.name for svc in prodinf_services()} >= EXPECTED_SERVICES - {"rabbitmq", "postgres"}
    fail_on(
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
    """Given each depends_on, then its target exists and can meet its condition (a health
    check to be healthy, a one-shot to complete, no cycle).
    """
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
    fail_on(sorted(set(problems)))


def test_prodinf_services_share_settings_that_reach_the_store_and_broker(
    repo_importable: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given the prodinf services' environments, when each builds its Settings, then they
    share the store, broker and queues, reach the postgres and rabbitmq services, and
    none is left on the embedded defaults.
    """
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
            service_settings(svc, monkeypatch)
        except Exception as exc:  # pydantic.ValidationError
            problems.append(f"{svc.name}: its PRODINF_* settings do not load: {exc}")
        seen.setdefault(tuple(env.get(name) for name in shared), []).append(svc.name)
        # Every prodinf process opens the store; only Celery and the portal talk to the broker.
        uses_broker = program_of(svc.argv)[0] in {"celery", "gunicorn"}
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
    fail_on(problems)


def test_migrations_run_before_portal_and_workers() -> None:
    """Given the migrate service, then the portal and every worker wait for it to complete."""
    graph = services()
    migrate = {
        svc.name for svc in graph.values() if program_of(svc.argv) == ("prodinf", ["db", "upgrade"])
    }
    assert migrate, "no service runs `prodinf db upgrade`"
    problems = [f"{name}: restarts, but is a one-shot" for name in migrate if graph[name].restarts]
    for svc in graph.values():
        celery = celery_of(svc)
        serves = gunicorn_of(svc.argv) or (celery and celery.subcommand == "worker")
        if serves and not any(
            svc.depends_on.get(name) == "service_completed_successfully" for name in migrate
        ):
            problems.append(f"{svc.name}: does not wait for {sorted(migrate)} to complete")
    fail_on(problems)


# -- compose: celery -----------------------------------------------------------------


def test_celery_app_modules_expose_a_celery_app(import_app: Callable[[str], ModuleType]) -> None:
    """Given each celery -A module the services name, when imported with a container's
    settings, then it exposes a Celery app.
    """
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
            app = import_attr(import_app, attr_target)
        except Exception as exc:
            problems.append(f"{target} (used by {sorted(set(users))}): {exc!r}")
            continue
        if not isinstance(app, Celery):
            problems.append(f"{attr_target} is {type(app).__name__}, not a celery.Celery")
    fail_on(problems)


def _workers() -> list[tuple[Service, CeleryCommand]]:
    return [
        (svc, celery)
        for svc in services().values()
        if (celery := celery_of(svc)) is not None and celery.subcommand == "worker"
    ]


def test_worker_queues_are_configured_queue_names(
    repo_importable: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given each worker's -Q, then it names queues its settings configure."""
    problems = []
    workers = _workers()
    assert workers, "no celery worker services"
    for svc, celery in workers:
        configured = service_settings(svc, monkeypatch).queues
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
    fail_on(problems)


def test_each_queue_has_exactly_one_worker_service(
    repo_importable: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the worker services, then each configured queue has exactly one."""
    consumers: dict[str, list[str]] = {}
    for svc, celery in _workers():
        by_name = {
            name: logical for logical, name in service_settings(svc, monkeypatch).queues.items()
        }
        for queue in celery.queues:
            consumers.setdefault(by_name.get(queue, queue), []).append(svc.name)
    expected = {"handover", "event", "email", "jobs"}
    counts = {queue: consumers.get(queue, []) for queue in expected}
    assert all(len(names) == 1 for names in counts.values()), counts


def test_exactly_one_beat() -> None:
    """Given the services, then exactly one runs beat, and only one replica of it."""
    beats = [svc for svc in services().values() if (c := celery_of(svc)) and c.runs_beat]
    assert len(beats) == 1, f"beat runs in {[svc.name for svc in beats]}: periodic tasks need one"
    spec = beats[0].spec
    replicas = (spec.get("deploy") or {}).get("replicas", spec.get("scale", 1))
    assert int(replicas) == 1, f"{beats[0].name} has {replicas} replicas"


# -- gunicorn, the CLI and ports -----------------------------------------------------


def test_gunicorn_targets_are_flask_apps(import_app: Callable[[str], ModuleType]) -> None:
    """Given each gunicorn target the services name, when imported, then it is a Flask app."""
    from flask import Flask

    problems, seen = [], 0
    for where, argv in commands():
        gunicorn = gunicorn_of(argv)
        if gunicorn is None:
            continue
        seen += 1
        target = gunicorn[1]
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", target):
            problems.append(f"{where}: last argument {target!r} is not module:attr")
            continue
        try:
            app = import_attr(import_app, target)
        except Exception as exc:
            problems.append(f"{where}: {target}: {exc!r}")
            continue
        if not isinstance(app, Flask):
            problems.append(f"{where}: {target} is {type(app).__name__}, not a flask.Flask")
    assert seen, "no gunicorn command found"
    fail_on(problems)


def test_gunicorn_binds_an_exposed_port_on_all_interfaces() -> None:
    """Given each gunicorn command, then it binds an address reachable from outside the
    container (not loopback), on a port the Dockerfile exposes."""
    problems = []
    for where, argv in commands():
        gunicorn = gunicorn_of(argv)
        if gunicorn is None:
            continue
        if not gunicorn[0]:
            problems.append(f"{where}: no -b; gunicorn would bind 127.0.0.1:8000")
        for address in gunicorn[0]:
            host = address.rpartition(":")[0]
            port = port_of(address)
            if host in LOOPBACK:
                problems.append(f"{where}: binds {address}, unreachable from outside the container")
            if port not in dockerfile().exposed:
                problems.append(
                    f"{where}: binds {address}, Dockerfile EXPOSEs {dockerfile().exposed}"
                )
    fail_on(problems)


def test_published_ports_are_ports_the_service_listens_on() -> None:
    """Given each published port of a prodinf service, then the service listens on it."""
    problems = []
    for svc in prodinf_services():
        listening = listening_ports(svc.argv)
        problems += [
            f"{svc.name}: publishes container port {port}, listens on {sorted(listening)}"
            for port in sorted(published_container_ports(svc) - listening)
        ]
    fail_on(problems)


def test_prodinf_subcommands_exist(import_app: Callable[[str], ModuleType]) -> None:
    """Given each prodinf command the files run, then the CLI has that subcommand."""
    import click

    invocations = [
        (svc.name, program_of(svc.argv)[1])
        for svc in services().values()
        if program_of(svc.argv)[0] == "prodinf"
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
    fail_on(problems)
