"""Naming rules: read a database name as its dataset, type, release and assembly.

Users name their databases by a convention (Ensembl's ``homo_sapiens_core_115_38``);
the healthchecks need the release a database claims to be, and metadata
registration needs the dataset it belongs to. The convention lives in a YAML file
of regular expressions (``config/naming.yaml``, or the file ``PRODINF_NAMING_RULES``
names) so a team with other names replaces the file, not the code.

The file is read and checked when settings load, so a bad pattern stops every
process at start with a message naming the rule, not a job at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prodinf.exceptions import ValidationError
from prodinf.rulesfile import load_rules_file

__all__ = [
    "DEFAULT_NAMING_RULES",
    "DatasetName",
    "NamingRule",
    "NamingRules",
    "load_naming_rules",
]

#: The rules shipped with prodinf (a copy of ``config/naming.yaml``), used when
#: ``PRODINF_NAMING_RULES`` is unset; package data, so it works from a wheel too.
DEFAULT_NAMING_RULES = Path(__file__).parent / "defaults" / "naming.yaml"

_REQUIRED_GROUPS = ("dataset", "release")
_RULE_KEYS = {"name", "pattern", "type", "assembly"}


@dataclass(frozen=True)
class DatasetName:
    """What a database name says: its dataset, type, release and (maybe) assembly."""

    database: str
    dataset: str
    type: str
    release: int
    assembly: str | None
    rule: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "dataset": self.dataset,
            "type": self.type,
            "release": self.release,
            "assembly": self.assembly,
            "rule": self.rule,
        }


@dataclass(frozen=True)
class NamingRule:
    """One pattern; ``type``/``assembly`` are fixed values for names that do not carry them."""

    name: str
    pattern: re.Pattern[str]
    type: str | None = None
    assembly: str | None = None

    def match(self, database: str) -> DatasetName | None:
        found = self.pattern.fullmatch(database)
        if found is None:
            return None
        groups = found.groupdict()
        return DatasetName(
            database=database,
            dataset=groups["dataset"],
            type=groups.get("type") or self.type or "",
            release=int(groups["release"]),
            assembly=groups.get("assembly") or self.assembly,
            rule=self.name,
        )


@dataclass(frozen=True)
class NamingRules:
    """An ordered list of rules: the first that matches a whole name wins."""

    rules: tuple[NamingRule, ...]
    source: str = "<memory>"

    def parse(self, database: str) -> DatasetName:
        """What ``database`` says; raises ``ValidationError`` if no rule matches it."""
        found = self.match(database)
        if found is None:
            names = ", ".join(rule.name for rule in self.rules)
            raise ValidationError(
                f"database name {database!r} matches no naming rule ({names}) in {self.source}",
                field="database_uri",
            )
        return found

    def match(self, database: str) -> DatasetName | None:
        """What ``database`` says, or None when no rule matches it."""
        for rule in self.rules:
            found = rule.match(database)
            if found is not None:
                return found
        return None

    @classmethod
    def from_document(cls, document: Any, source: str = "<memory>") -> NamingRules:
        """Rules from a parsed YAML document; raises ``ValidationError`` saying what is wrong."""

        def bad(message: str) -> ValidationError:
            return ValidationError(f"{source}: {message}", field="naming_rules")

        if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
            raise bad("must be a mapping with a list under `rules`")
        if not document["rules"]:
            raise bad("`rules` is empty: at least one rule is needed")
        rules: list[NamingRule] = []
        for index, item in enumerate(document["rules"], 1):
            if not isinstance(item, dict):
                raise bad(f"rule {index} must be a mapping")
            name = str(item.get("name") or f"rule {index}")
            unknown = set(item) - _RULE_KEYS
            if unknown:
                raise bad(f"rule {name!r}: unknown keys {sorted(unknown)}")
            text = item.get("pattern")
            if not isinstance(text, str) or not text:
                raise bad(f"rule {name!r}: `pattern` must be a non-empty string")
            try:
                pattern = re.compile(text)
            except re.error as exc:
                raise bad(f"rule {name!r}: bad regular expression: {exc}") from None
            groups = set(pattern.groupindex)
            missing = [g for g in _REQUIRED_GROUPS if g not in groups]
            if "type" not in groups and not item.get("type"):
                missing.append("type")
            if missing:
                raise bad(
                    f"rule {name!r}: the pattern lacks the named group(s) "
                    + ", ".join(f"(?P<{g}>...)" for g in missing)
                    + (" (or a fixed `type:`)" if "type" in missing else "")
                )
            fixed = {key: item.get(key) for key in ("type", "assembly")}
            for key, value in fixed.items():
                if value is not None and not isinstance(value, str | int):
                    raise bad(f"rule {name!r}: `{key}` must be text")
            rules.append(
                NamingRule(
                    name=name,
                    pattern=pattern,
                    type=None if fixed["type"] is None else str(fixed["type"]),
                    assembly=None if fixed["assembly"] is None else str(fixed["assembly"]),
                )
            )
        return cls(tuple(rules), source)


def load_naming_rules(path: Path | str | None = None) -> NamingRules:
    """The rules in ``path`` (default: the shipped rules), read once per file version.

    :raises ValidationError: the file is missing, is not YAML, or holds a bad rule.
    """
    return load_rules_file(
        path, DEFAULT_NAMING_RULES, "naming rules", "naming_rules", NamingRules.from_document
    )
