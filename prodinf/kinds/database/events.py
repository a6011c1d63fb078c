"""The events a registration implies, compared with the dataset's previous one.

* ``dataset.created``: the dataset was never registered before.
* ``dataset.updated``: some table's row count or checksum changed, or a table
  appeared or went; the event names them.
* One event per rule of ``config/events.yaml`` (``PRODINF_EVENT_RULES``) whose
  ``meta`` keys changed: ``assembly.default`` changed -> ``new_assembly``.

The rules file is read and checked when settings load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prodinf.exceptions import ValidationError
from prodinf.rulesfile import load_rules_file

__all__ = [
    "DEFAULT_EVENT_RULES",
    "EventRule",
    "EventRules",
    "Snapshot",
    "events_between",
    "load_event_rules",
]

#: The rules shipped with prodinf (a copy of ``config/events.yaml``).
DEFAULT_EVENT_RULES = Path(__file__).parent / "defaults" / "events.yaml"


@dataclass(frozen=True)
class EventRule:
    """Emit ``event`` when any of ``keys`` changed between two registrations."""

    event: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class EventRules:
    rules: tuple[EventRule, ...]
    source: str = "<memory>"

    @classmethod
    def from_document(cls, document: Any, source: str = "<memory>") -> EventRules:
        """Rules from a parsed YAML document; raises ``ValidationError`` saying what is wrong."""

        def bad(message: str) -> ValidationError:
            return ValidationError(f"{source}: {message}", field="event_rules")

        if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
            raise bad("must be a mapping with a list under `rules`")
        rules: list[EventRule] = []
        for index, item in enumerate(document["rules"], 1):
            if not isinstance(item, dict) or set(item) != {"event", "when_changed"}:
                raise bad(f"rule {index} must have exactly `event` and `when_changed`")
            event, keys = item["event"], item["when_changed"]
            if not isinstance(event, str) or not event.strip():
                raise bad(f"rule {index}: `event` must be a non-empty name")
            if isinstance(keys, str):
                keys = [keys]
            if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
                raise bad(f"rule {event!r}: `when_changed` must be a list of meta keys")
            rules.append(EventRule(event.strip(), tuple(keys)))
        return cls(tuple(rules), source)


@dataclass(frozen=True)
class Snapshot:
    """What a registration recorded that events compare: tables, meta and release."""

    release: int | None
    tables: dict[str, dict[str, Any]]
    meta: dict[str, Any]


def events_between(
    previous: Snapshot | None, current: Snapshot, rules: EventRules
) -> list[dict[str, Any]]:
    """The events ``current`` implies after ``previous`` (None: never registered)."""
    if previous is None:
        return [{"type": "dataset.created", "tables": sorted(current.tables)}]
    events: list[dict[str, Any]] = []
    before, after = previous.tables, current.tables
    changed = sorted(
        name
        for name in set(before) & set(after)
        if (before[name].get("rows"), before[name].get("checksum"))
        != (after[name].get("rows"), after[name].get("checksum"))
    )
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    if changed or added or removed:
        events.append(
            {
                "type": "dataset.updated",
                "tables": {"changed": changed, "added": added, "removed": removed},
                "rows": {
                    name: {"before": before[name].get("rows"), "after": after[name].get("rows")}
                    for name in changed
                },
            }
        )
    for rule in rules.rules:
        differences = {
            key: {"before": previous.meta.get(key), "after": current.meta.get(key)}
            for key in rule.keys
            if previous.meta.get(key) != current.meta.get(key)
        }
        if differences:
            events.append({"type": rule.event, "meta": differences})
    return events


def load_event_rules(path: Path | str | None = None) -> EventRules:
    """The rules in ``path`` (default: the shipped ones), read once per file version.

    :raises ValidationError: the file is missing, not YAML, or holds a bad rule.
    """
    return load_rules_file(
        path, DEFAULT_EVENT_RULES, "event rules", "event_rules", EventRules.from_document
    )
