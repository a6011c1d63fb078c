"""YAML configuration files (naming rules, the healthcheck catalogue, event rules,
subscriptions, services): read once per version of the file, and refused with a
``ValidationError`` naming the setting."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml

from prodinf.exceptions import ValidationError

__all__ = ["load_rules_file"]

T = TypeVar("T")


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
