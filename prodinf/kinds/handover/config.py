"""The handover configuration: which database types are accepted now, which stages each
runs (and where), the meta key a database declares its release in, and where each is
staged. ``config/handover.yaml`` is the documented example; ``PRODINF_HANDOVER_CONFIG``
points at your own. It is checked when prodinf starts, and read again whenever it
changes, so a window opens or closes without restarting anything::

    release_key: schema_version        # the meta key holding the declared release
    types:
      core:
        window: {opens: 2026-11-01T00:00:00Z, closes: 2026-12-15T00:00:00Z}
        stages:                        # in this order; any of the four, in order
          healthcheck: {params: {groups: [core]}}
          copy: {}
          metadata: {}
          events: {}
    staging:                           # first match wins
      - name: core-staging
        types: [core]                  # optional: every type when unset
        pattern: "*"                   # glob on the database name
        server: mysql://prodinf@staging-db:3306
        password_env: STAGING_DB_PASSWORD   # the NAME of the variable holding it

A stage may run elsewhere: ``service`` names an entry of the services file (another
prodinf runs ``kind``, default the stage's own kind here; an HTTP job service gets the
stage's params).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from prodinf.databases.uri import DatabaseURI
from prodinf.exceptions import PermanentError, ValidationError
from prodinf.rulesfile import check_name, load_rules_file, named_entries

__all__ = [
    "DEFAULT_HANDOVER_CONFIG",
    "STAGES",
    "STAGE_KINDS",
    "HandoverConfig",
    "StageSettings",
    "StagingRule",
    "TypeSettings",
    "Window",
    "load_handover_config",
]

#: The example shipped with prodinf (a copy of ``config/handover.yaml``).
DEFAULT_HANDOVER_CONFIG = Path(__file__).parent / "defaults" / "handover.yaml"

#: The stages of a handover, in the order they run: the one list of their names that
#: the code, the configuration, the API (``restart {"from": ...}``) and the docs share.
STAGES = ("healthcheck", "copy", "metadata", "events")
#: The kind each stage runs here when no ``service`` is set (``events`` runs none: the
#: handover links the events its registration recorded).
STAGE_KINDS = {
    "healthcheck": "healthcheck",
    "copy": "copy_database",
    "metadata": "register_metadata",
}
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")


class Window(BaseModel):
    """When a type is accepted: from ``opens`` (unset: always was) until ``closes``
    (unset: no end). A window with neither is closed."""

    model_config = ConfigDict(extra="forbid")

    opens: AwareDatetime | None = None
    closes: AwareDatetime | None = None

    def refusal(self, type_: str, now: datetime) -> str | None:
        """Why ``type_`` databases are not accepted at ``now``, or ``None``."""
        if self.opens is None and self.closes is None:
            return f"{type_} databases are not accepted now: the handover window is closed"
        if self.opens is not None and now < self.opens:
            return (
                f"{type_} databases are not accepted now: the window opens on "
                f"{self.opens.isoformat()}"
            )
        if self.closes is not None and now >= self.closes:
            return (
                f"{type_} databases are not accepted now: the window closed on "
                f"{self.closes.isoformat()}"
            )
        return None


class StageSettings(BaseModel):
    """Where one stage runs and what it adds to its job's params."""

    model_config = ConfigDict(extra="forbid")

    service: str | None = Field(default=None, description="A service of the services file.")
    kind: str | None = Field(default=None, description="The kind it runs there (a prodinf).")
    params: dict[str, Any] = Field(default_factory=dict, description="Added to the params.")

    @field_validator("service")
    @classmethod
    def _service(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)


class TypeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: Window | None = None
    stages: dict[str, StageSettings | None] = Field(default_factory=lambda: dict.fromkeys(STAGES))

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: dict[str, StageSettings | None]) -> dict[str, StageSettings | None]:
        unknown = [name for name in value if name not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}: the stages are {', '.join(STAGES)}")
        if not value:
            raise ValueError(f"name at least one stage of {', '.join(STAGES)}")
        if list(value) != [name for name in STAGES if name in value]:
            raise ValueError(f"stages run in the order {', '.join(STAGES)}")
        if "events" in value and "metadata" not in value:
            raise ValueError("events needs the metadata stage, whose registration finds them")
        return value

    def stage(self, name: str) -> StageSettings:
        return self.stages.get(name) or StageSettings()

    @property
    def accepting(self) -> Window:
        return self.window or Window()


class StagingRule(BaseModel):
    """Where databases of ``types`` whose name matches ``pattern`` are staged."""

    model_config = ConfigDict(extra="forbid")

    name: str
    types: list[str] | None = None
    pattern: str = "*"
    server: str = Field(description="The staging server's URI, without a password.")
    user_env: str | None = None
    password_env: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        uri = DatabaseURI.parse(value.rstrip("/") + "/x", field="server")
        if uri.url.password:
            raise ValueError("put the password in the variable password_env names, not here")
        return value.rstrip("/")

    @field_validator("user_env", "password_env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("the NAME of an environment variable (A-Z, 0-9, _)")
        return value

    def matches(self, type_: str, database: str) -> bool:
        return (self.types is None or type_ in self.types) and fnmatch.fnmatchcase(
            database, self.pattern
        )

    def under(self, home: Path) -> StagingRule:
        """This rule with a relative SQLite folder (``sqlite:///staging``) made absolute
        under ``home`` (PRODINF_HOME), so the portal and every worker stage to one place."""
        prefix = "sqlite:///"
        folder = self.server.removeprefix(prefix)
        if not self.server.startswith(prefix) or Path(folder).is_absolute():
            return self
        return self.model_copy(update={"server": f"{prefix}{home / folder}"})

    def target(self, database: str) -> DatabaseURI:
        """The staging URI of ``database``, with credentials from the environment.

        :raises PermanentError: a variable it names is not set.
        """
        name = f"{database}.sqlite" if self.server.startswith("sqlite") else database
        uri = DatabaseURI.parse(f"{self.server}/{name}", field="server")
        url = uri.url
        user, password = (self._from_env(env) for env in (self.user_env, self.password_env))
        if user is not None:
            url = url.set(username=user)
        if password is not None:
            url = url.set(password=password)
        return DatabaseURI(url)

    def _from_env(self, name: str | None) -> str | None:
        if name is None:
            return None
        value = os.environ.get(name)
        if value is None:
            raise PermanentError(f"staging {self.name!r}: {name} is not set")
        return value


@dataclass(frozen=True)
class HandoverConfig:
    release_key: str
    types: dict[str, TypeSettings]
    staging: list[StagingRule]
    source: str

    def type_settings(self, type_: str) -> TypeSettings | None:
        return self.types.get(type_)

    def staging_for(self, type_: str, database: str) -> StagingRule | None:
        """The first staging rule for ``type_`` and ``database``, or ``None``."""
        return next((r for r in self.staging if r.matches(type_, database)), None)

    @classmethod
    def from_document(cls, document: Any, source: str = "<memory>") -> HandoverConfig:
        def bad(message: str) -> ValidationError:
            return ValidationError(f"{source}: {message}", field="handover_config")

        if not isinstance(document, dict):
            raise bad("must be a mapping with `types` and `staging`")
        unknown = set(document) - {"release_key", "types", "staging"}
        if unknown:
            raise bad(f"unknown top-level field(s): {sorted(unknown)}")
        release_key = document.get("release_key", "schema_version")
        if not isinstance(release_key, str) or not release_key:
            raise bad("release_key: must be the name of a meta key")
        raw_types = document.get("types") or {}
        if not isinstance(raw_types, dict):
            raise bad("types: must map each database type to its settings")
        types: dict[str, TypeSettings] = {}
        for name, raw in raw_types.items():
            try:
                types[str(name)] = TypeSettings.model_validate(raw or {})
            except Exception as exc:  # pydantic's error, named by its field
                errors = getattr(exc, "errors", None)
                if errors is None:
                    raise
                first = errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "entry"
                raise bad(f"type {name!r}: {where}: {first['msg']}") from None
        staging = named_entries(
            {"staging": document.get("staging") or []},
            source,
            "staging",
            "staging rule",
            lambda item, _label: StagingRule.model_validate(item),
        )
        return cls(release_key, types, staging, source)


def load_handover_config(path: Path | str | None = None) -> HandoverConfig:
    """The handover configuration at ``path`` (default: the shipped example), read again
    whenever the file changes.

    :raises ValidationError: the file is missing or wrong, naming the entry and field.
    """
    return load_rules_file(
        path,
        DEFAULT_HANDOVER_CONFIG,
        "handover configuration",
        "handover_config",
        HandoverConfig.from_document,
    )
