"""The YAML rules files the built-in kinds read, checked when prodinf starts.

Naming rules (``PRODINF_NAMING_RULES``), the healthcheck catalogue
(``PRODINF_HEALTHCHECKS``), the event rules (``PRODINF_EVENT_RULES``), the
subscriptions (``PRODINF_SUBSCRIPTIONS``) and the remote services
(``PRODINF_SERVICES``) and the handover configuration (``PRODINF_HANDOVER_CONFIG``)
are read by jobs, but a bad file must stop prodinf when it
starts, not fail the first job (so must a subscription naming a service the services
file does not have): every runtime (portal, worker, CLI) calls
:func:`check_rules_files` as it is built. Each loader caches the file per version, so
jobs do not read it again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prodinf.config import Settings
from prodinf.databases.naming import load_naming_rules
from prodinf.exceptions import ValidationError
from prodinf.kinds.database.checks.catalogue import load_catalogue
from prodinf.kinds.database.events import load_event_rules
from prodinf.kinds.handover.config import load_handover_config
from prodinf.kinds.subscriptions import load_subscriptions
from prodinf.remote.services import load_services

__all__ = ["RULES_FILES", "check_rules_files"]

#: Each rules file setting and the function that reads and checks it.
RULES_FILES: dict[str, Callable[[Path | None], Any]] = {
    "naming_rules": load_naming_rules,
    "healthchecks": load_catalogue,
    "event_rules": load_event_rules,
    "subscriptions": load_subscriptions,
    "services": load_services,
    "handover_config": load_handover_config,
}


def check_rules_files(settings: Settings) -> None:
    """Read every rules file ``settings`` name (or the shipped defaults).

    :raises ValidationError: a file is missing or wrong; the message starts
        ``invalid setting PRODINF_<NAME>:`` and names the file and the entry.
    """
    for name, load in RULES_FILES.items():
        try:
            load(getattr(settings, name))
        except ValidationError as exc:
            setting = f"PRODINF_{name.upper()}"
            raise ValidationError(
                f"invalid setting {setting}: {exc.message}", field=setting
            ) from None
    _services_exist(settings)
    _stage_services_exist(settings)


def _services_exist(settings: Settings) -> None:
    """Every ``run: {service}`` of a subscription names a service of the services file,
    with a ``kind`` for another prodinf and none for an HTTP job service."""
    subscriptions = load_subscriptions(settings.subscriptions)
    services = load_services(settings.services)
    for sub in subscriptions.subscriptions:
        run = sub.run
        if run.service is None:
            continue
        found = services.by_name.get(run.service)
        if found is None:
            wrong = f"run.service: no service {run.service!r} in {services.source}"
        elif found.type == "prodinf" and not run.kind:
            wrong = f"run.kind: name the kind to run on {run.service} (another prodinf)"
        elif found.type == "http" and run.kind:
            wrong = f"run.kind: {run.service} is an HTTP job service; it runs no kinds"
        else:
            continue
        raise ValidationError(
            f"invalid setting PRODINF_SUBSCRIPTIONS: {subscriptions.source}: "
            f"subscription {sub.name!r}: {wrong}",
            field="PRODINF_SUBSCRIPTIONS",
        )


def _stage_services_exist(settings: Settings) -> None:
    """Every stage ``service`` of the handover configuration names a service of the
    services file, with no ``kind`` for an HTTP job service."""
    config = load_handover_config(settings.handover_config)
    services = load_services(settings.services)
    for type_, found in config.types.items():
        for stage, spec in found.stages.items():
            if spec is None or spec.service is None:
                continue
            service = services.by_name.get(spec.service)
            if service is None:
                wrong = f"service: no service {spec.service!r} in {services.source}"
            elif service.type == "http" and spec.kind:
                wrong = f"kind: {spec.service} is an HTTP job service; it runs no kinds"
            else:
                continue
            raise ValidationError(
                f"invalid setting PRODINF_HANDOVER_CONFIG: {config.source}: type {type_!r}: "
                f"stages.{stage}.{wrong}",
                field="PRODINF_HANDOVER_CONFIG",
            )
