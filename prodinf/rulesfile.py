"""YAML configuration files (naming rules, the healthcheck catalogue, event rules,
subscriptions, services): read once per version of the file, and refused with a
``ValidationError`` naming the setting."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from pydantic import ValidationError as PydanticError

from prodinf.exceptions import ValidationError

__all__ = ["check_name", "load_rules_file", "named_entries"]

T = TypeVar("T")

#: A name in a configuration file (a subscription, a service, a queue).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")


def check_name(value: str) -> str:
    """``value`` if it is a name of 1 to 60 letters, digits, ``_``, ``.`` or ``-``.

    :raises ValueError: it is not (for a pydantic validator to report).
    """
    if not _NAME.match(value):
        raise ValueError("must be 1 to 60 letters, digits, '_', '.' or '-'")
    return value


def load_rules_file(
    path: Path | str | None,
    default: Path,
    what: str,
    field: str,
    parse: Callable[[Any, str], T],
) -> T:
    """``parse(document, path)`` of the YAML file ``path`` (``default`` when unset).

    The result is cached until the file changes (its modification time), so an
    edited file is read again. ``what`` names the file in messages ("naming
    rules"); ``field`` is the setting a ``ValidationError`` names.

    :raises ValidationError: the file is missing, is not YAML, or ``parse`` refuses it.
    """
    target = Path(path) if path else default
    try:
        stamp = target.stat().st_mtime_ns
    except OSError as exc:
        raise ValidationError(f"cannot read {what} {target}: {exc.strerror}", field=field) from None
    return cast(T, _load(str(target), stamp, what, field, parse))


@lru_cache(maxsize=64)
def _load(path: str, stamp: int, what: str, field: str, parse: Callable[[Any, str], Any]) -> Any:
    # ``stamp`` is only part of the cache key: an edited file is read again.
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValidationError(f"cannot read {what} {path}: {exc}", field=field) from None
    return parse(document, path)


def named_entries(
    document: Any,
    source: str,
    key: str,
    noun: str,
    validate: Callable[[Any, str], T],
) -> list[T]:
    """The entries of a file that is one list under ``key`` of mappings with a unique
    ``name`` (subscriptions, services), each made by ``validate(item, label)``.

    :raises ValidationError: naming the file, the entry (``<noun> 'name'``, or its
        number when it has no name) and what is wrong: a pydantic error's field and
        message, a ``ValidationError`` of ``validate``'s, or a name used twice.
    """

    def bad(message: str) -> ValidationError:
        return ValidationError(f"{source}: {message}", field=key)

    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise bad(f"must be a mapping with a list under `{key}`")
    if set(document) != {key}:
        raise bad(f"unknown top-level field(s): {sorted(set(document) - {key})}")
    entries: list[T] = []
    seen: set[str] = set()
    for index, item in enumerate(document[key], 1):
        name = item.get("name") if isinstance(item, dict) else None
        label = f"{noun} {name!r}" if isinstance(name, str) else f"{noun} {index}"
        if not isinstance(item, dict):
            raise bad(f"{label}: must be a mapping")
        try:
            entries.append(validate(item, label))
        except PydanticError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "entry"
            raise bad(f"{label}: {where}: {first['msg']}") from None
        except ValidationError as exc:
            raise bad(f"{label}: {exc.message}") from None
        if name in seen:
            raise bad(f"{label}: the name is used twice")
        seen.add(str(name))
    return entries
