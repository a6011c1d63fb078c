"""The healthcheck catalogue: checks declared in YAML plus Python checks from plugins.

A check has a name, a group, the dataset types it applies to (``core``, ...,
``"*"`` for all) and the engines it runs on. YAML entries use a built-in check
type (:mod:`.builtin`); Python checks register with :func:`healthcheck`::

    from prodinf.kinds.database.checks import CheckContext, Finding, healthcheck

    @healthcheck("genes_have_transcripts", group="core", applies_to=["core"])
    def genes_have_transcripts(ctx: CheckContext) -> Finding:
        \"\"\"Every gene has at least one transcript.\"\"\"
        return ctx.problems(
            "SELECT g.gene_id, g.stable_id FROM gene g "
            "LEFT JOIN transcript t ON t.gene_id = g.gene_id WHERE t.transcript_id IS NULL",
            what="genes without transcripts",
        )

The YAML file is read and checked when settings load; Python checks are added as
plugin modules are imported (``PRODINF_PLUGINS`` or the ``prodinf.kinds`` entry points).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from prodinf.exceptions import ValidationError
from prodinf.kinds.database.checks.builtin import CHECK_TYPES, CheckFn
from prodinf.rulesfile import load_rules_file

__all__ = [
    "DEFAULT_CATALOGUE",
    "ENGINES",
    "Catalogue",
    "CheckSpec",
    "healthcheck",
    "load_catalogue",
    "python_checks",
]

#: The catalogue shipped with prodinf (a copy of ``config/healthchecks.yaml``).
DEFAULT_CATALOGUE = Path(__file__).parent / "defaults" / "healthchecks.yaml"
#: Engines a check may run on.
ENGINES = ("mysql", "postgresql", "sqlite")
_ENTRY_KEYS = {"name", "group", "type", "applies_to", "engines", "description", "options"}


@dataclass(frozen=True)
class CheckSpec:
    """One check of the catalogue."""

    name: str
    group: str
    run: CheckFn
    applies_to: tuple[str, ...] = ("*",)
    engines: tuple[str, ...] = ENGINES
    description: str = ""
    #: ``yaml:<type>`` for catalogue entries, the module for Python checks.
    origin: str = ""

    def skip_reason(self, dataset_type: str | None, engine: str) -> str | None:
        """Why this check does not apply to a database, or None when it does."""
        if engine not in self.engines:
            return f"does not run on {engine}"
        if "*" in self.applies_to:
            return None
        if dataset_type is None:
            return "the database name matches no naming rule, so its type is unknown"
        if dataset_type not in self.applies_to:
            return f"applies to {', '.join(self.applies_to)}, not {dataset_type}"
        return None


#: Python checks registered by :func:`healthcheck`, by name.
_PYTHON_CHECKS: dict[str, CheckSpec] = {}


def healthcheck(
    name: str,
    *,
    group: str,
    applies_to: Iterable[str] = ("*",),
    engines: Iterable[str] = ENGINES,
    description: str | None = None,
) -> Callable[[CheckFn], CheckFn]:
    """Register the decorated function as a check; it takes a ``CheckContext``,
    returns a ``Finding``, and should do its work in SQL (``ctx.problems``)."""
    engines = tuple(engines)
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise ValueError(f"check {name!r}: unknown engines {sorted(unknown)}")

    def register(fn: CheckFn) -> CheckFn:
        origin = f"{fn.__module__}.{fn.__qualname__}"
        existing = _PYTHON_CHECKS.get(name)
        if existing is not None and existing.origin != origin:
            raise ValueError(f"healthcheck {name!r} is registered twice")
        _PYTHON_CHECKS[name] = CheckSpec(
            name=name,
            group=group,
            run=fn,
            applies_to=tuple(applies_to),
            engines=engines,
            description=description or (fn.__doc__ or "").strip(),
            origin=origin,
        )
        return fn

    return register


def python_checks() -> dict[str, CheckSpec]:
    """The Python checks registered so far, by name."""
    return dict(_PYTHON_CHECKS)


@dataclass(frozen=True)
class Catalogue:
    """Checks by name, in catalogue order (YAML first, then Python checks)."""

    checks: tuple[CheckSpec, ...]
    source: str = "<memory>"

    def with_python_checks(self) -> Catalogue:
        """This catalogue plus every registered Python check (a YAML name wins no tie)."""
        names = {c.name for c in self.checks}
        clash = names & set(_PYTHON_CHECKS)
        if clash:
            raise ValidationError(
                f"healthchecks named in both {self.source} and a plugin: {sorted(clash)}",
                field="healthchecks",
            )
        return Catalogue(self.checks + tuple(_PYTHON_CHECKS.values()), self.source)

    @property
    def groups(self) -> list[str]:
        return sorted({c.group for c in self.checks})

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checks]

    def select(
        self, groups: Iterable[str] | None = None, names: Iterable[str] | None = None
    ) -> list[CheckSpec]:
        """The checks in ``groups`` plus those in ``names``; every check when both are empty.

        :raises ValidationError: a group or name the catalogue does not have
            (``field`` is ``params.groups`` or ``params.names``).
        """
        groups, names = list(groups or []), list(names or [])
        bad_groups = [g for g in groups if g not in self.groups]
        if bad_groups:
            raise ValidationError(
                f"params.groups: unknown group(s) {', '.join(map(repr, bad_groups))}; "
                f"the catalogue has {', '.join(self.groups)}",
                field="params.groups",
            )
        bad_names = [n for n in names if n not in self.names]
        if bad_names:
            raise ValidationError(
                f"params.names: unknown check(s) {', '.join(map(repr, bad_names))}; "
                f"the catalogue has {', '.join(self.names)}",
                field="params.names",
            )
        if not groups and not names:
            return list(self.checks)
        return [c for c in self.checks if c.group in groups or c.name in names]

    @classmethod
    def from_document(cls, document: Any, source: str = "<memory>") -> Catalogue:
        """A catalogue from a parsed YAML document; raises ``ValidationError`` saying
        which entry is wrong and how."""

        def bad(message: str) -> ValidationError:
            return ValidationError(f"{source}: {message}", field="healthchecks")

        if not isinstance(document, dict) or not isinstance(document.get("checks"), list):
            raise bad("must be a mapping with a list under `checks`")
        checks: list[CheckSpec] = []
        seen: set[str] = set()
        for index, entry in enumerate(document["checks"], 1):
            if not isinstance(entry, dict):
                raise bad(f"check {index} must be a mapping")
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                raise bad(f"check {index} needs a `name`")
            if name in seen:
                raise bad(f"check {name!r} is declared twice")
            seen.add(name)
            unknown = set(entry) - _ENTRY_KEYS
            if unknown:
                raise bad(f"check {name!r}: unknown keys {sorted(unknown)}")
            group = entry.get("group")
            if not isinstance(group, str) or not group:
                raise bad(f"check {name!r} needs a `group`")
            kind = entry.get("type")
            if kind not in CHECK_TYPES:
                raise bad(
                    f"check {name!r}: `type` must be one of {', '.join(CHECK_TYPES)}, not {kind!r}"
                )
            options = entry.get("options") or {}
            if not isinstance(options, dict):
                raise bad(f"check {name!r}: `options` must be a mapping")
            try:
                run = CHECK_TYPES[kind](options)
            except PydanticValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise bad(f"check {name!r}: options.{where}: {first['msg']}") from None
            except ValueError as exc:
                raise bad(f"check {name!r}: {exc}") from None
            applies_to = _names(entry.get("applies_to", ["*"]))
            engines = _names(entry.get("engines", list(ENGINES)))
            if applies_to is None or engines is None:
                raise bad(f"check {name!r}: `applies_to` and `engines` are lists of names")
            if set(engines) - set(ENGINES):
                raise bad(f"check {name!r}: engines must be among {', '.join(ENGINES)}")
            checks.append(
                CheckSpec(
                    name=name,
                    group=group,
                    run=run,
                    applies_to=applies_to,
                    engines=engines,
                    description=str(entry.get("description") or "").strip(),
                    origin=f"yaml:{kind}",
                )
            )
        return cls(tuple(checks), source)


def _names(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def load_catalogue(path: Path | str | None = None) -> Catalogue:
    """The YAML catalogue at ``path`` (default: the shipped one), read once per version.

    Python checks are not included: see :meth:`Catalogue.with_python_checks`.

    :raises ValidationError: the file is missing, not YAML, or has a bad entry.
    """
    return load_rules_file(
        path,
        DEFAULT_CATALOGUE,
        "the healthcheck catalogue",
        "healthchecks",
        Catalogue.from_document,
    )
