"""The kinds registry: every kind of job, built-in or from a plugin, registers here."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from prodinf.engine.steps import Flow
from prodinf.exceptions import UnknownKind, ValidationError

__all__ = ["ENTRY_POINT_GROUP", "Kind", "NoParams", "Registry", "job_kind", "registry"]

log = logging.getLogger(__name__)

#: Entry-point group plugins use to register kinds.
ENTRY_POINT_GROUP = "prodinf.kinds"

P = TypeVar("P", bound=BaseModel)


class NoParams(BaseModel):
    """Params of a kind that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Kind(Generic[P]):
    """A registered kind: its name, queue, params schema and flow builder."""

    name: str
    queue: str
    params: type[P]
    build: Callable[[P], Flow]
    description: str = ""
    result: Callable[[dict[str, Any]], Any] | None = None
    #: Where jobs of the kind are submitted instead of ``POST /api/v1/jobs`` (a
    #: handover is checked first), or ``None``.
    submitted_at: str | None = None
    #: Made by prodinf itself (a notification, an event's job): not offered by the form.
    internal: bool = False

    def validate(self, params: Any, settings: Any = None) -> P:
        """Validate raw params; raises ``ValidationError`` naming the first bad field.

        With ``settings`` (a submission), validators that check against this prodinf's
        rules files read them from ``info.context["settings"]``: what would fail at
        run time (a database name no naming rule matches) is refused up front."""
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ValidationError("params must be a JSON object", field="params")
        context = {"settings": settings} if settings is not None else None
        try:
            return self.params.model_validate(params, context=context)
        except PydanticValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            field = f"params.{where}" if where else "params"
            said = first["msg"].removeprefix("Value error, ")  # a validator's own words
            raise ValidationError(f"{field}: {said}", field=field) from None

    def flow(self, params: P) -> Flow:
        return self.build(params)

    def schema(self) -> dict[str, Any]:
        return self.params.model_json_schema()


class Registry:
    """Kinds by name. ``load_plugins`` imports entry points and listed modules once."""

    def __init__(self) -> None:
        self._kinds: dict[str, Kind[Any]] = {}
        self._loaded: set[str] = set()

    def register(self, kind: Kind[Any]) -> Kind[Any]:
        existing = self._kinds.get(kind.name)
        # Importing the same module twice is harmless; two different builders are not.
        if existing is not None and _origin(existing.build) != _origin(kind.build):
            raise ValueError(f"kind {kind.name!r} is registered twice")
        self._kinds[kind.name] = kind
        return kind

    def get(self, name: str) -> Kind[Any]:
        try:
            return self._kinds[name]
        except KeyError:
            # the kinds one submits: not those prodinf makes itself (notifications...)
            known = sorted(k.name for k in self._kinds.values() if not k.internal)
            raise UnknownKind(name, known) from None

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def all(self) -> list[Kind[Any]]:
        return sorted(self._kinds.values(), key=lambda kind: kind.name)

    def load_plugins(self, modules: Iterable[str] = ()) -> None:
        """Import the ``prodinf.kinds`` entry points and the given modules."""
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.value not in self._loaded:
                self._loaded.add(ep.value)
                ep.load()
        for module in modules:
            if module not in self._loaded:
                try:
                    importlib.import_module(module)
                except ModuleNotFoundError as exc:
                    if exc.name is None or not module.startswith(exc.name):
                        raise  # the plugin imports something missing: its own traceback
                    raise ValidationError(
                        f"invalid setting PRODINF_PLUGINS: no module {module!r} can be "
                        "imported here: install the package that provides it, or add its "
                        "folder to PYTHONPATH",
                        field="PRODINF_PLUGINS",
                    ) from None
                self._loaded.add(module)


def _origin(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"


#: The process-wide registry ``@job_kind`` writes to.
registry = Registry()


def job_kind(
    name: str,
    *,
    queue: str = "jobs",
    params: type[BaseModel] = NoParams,
    description: str | None = None,
    result: Callable[[dict[str, Any]], Any] | None = None,
    into: Registry | None = None,
    submitted_at: str | None = None,
    internal: bool = False,
) -> Callable[[Callable[[Any], Flow]], Callable[[Any], Flow]]:
    """Register the decorated flow builder as a kind.

    ``queue`` is a logical queue (``handover``, ``event``, ``email``, ``jobs``)
    or any other queue name. ``result`` turns the outputs of the flow's final
    steps into the job's result (default: the last step's output).
    ``submitted_at`` names the only way jobs of the kind are submitted (``POST
    /api/v1/handovers``): the generic submission refuses them. ``internal`` kinds are
    made by prodinf itself (notifications, an event's job): the form does not offer them.
    """

    def decorate(build: Callable[[Any], Flow]) -> Callable[[Any], Flow]:
        doc = description if description is not None else (build.__doc__ or "").strip()
        (into or registry).register(
            Kind(
                name=name,
                queue=queue,
                params=params,
                build=build,
                description=doc,
                result=result,
                submitted_at=submitted_at,
                internal=internal,
            )
        )
        return build

    return decorate
