"""Templates that users write (subscription params, service request bodies), rendered
in Jinja2's sandbox with strict undefined.

A template reads the context it is given and nothing else: no method, no call,
nothing private (``payload.items`` and ``payload.__class__`` are undefined, so an
error), no files, no shell. A string that is one whole ``{{ ... }}`` keeps the type
of what it renders (``"{{ payload.release }}"`` gives a number).
"""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.nativetypes import NativeEnvironment
from jinja2.sandbox import SandboxedEnvironment

from prodinf.exceptions import ValidationError

__all__ = ["check_templates", "render_templates"]


class _ContextOnly(SandboxedEnvironment):
    """Jinja2's sandbox, narrowed to reading the context: no method, no call,
    nothing private."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return not attr.startswith("_") and not callable(value)

    def is_safe_callable(self, obj: Any) -> bool:
        return False


class _NativeContextOnly(_ContextOnly, NativeEnvironment):
    """The same, rendering a lone ``{{ ... }}`` to the value's own type."""


_JINJA = _ContextOnly(undefined=StrictUndefined, autoescape=False)
_NATIVE = _NativeContextOnly(undefined=StrictUndefined, autoescape=False)


def strings(value: Any, path: str) -> list[tuple[str, str]]:
    """Every string in ``value`` (dicts and lists walked), with its dotted path."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in strings(v, f"{path}.{i}")]
    return [(path, value)] if isinstance(value, str) else []


def check_templates(value: Any, path: str) -> None:
    """Compile every string in ``value``.

    :raises ValueError: one does not compile; the message names its path.
    """
    for where, text in strings(value, path):
        try:
            _JINJA.from_string(text)
        except TemplateError as exc:
            raise ValueError(f"{where}: the template does not compile: {exc}") from None


def render_templates(value: Any, context: dict[str, Any], path: str) -> Any:
    """``value`` with every string rendered as a template of ``context``.

    :raises ValidationError: a template reads what the context does not have, or
        reaches outside it; the message and ``field`` name its path.
    """
    if isinstance(value, dict):
        return {k: render_templates(v, context, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render_templates(v, context, f"{path}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str) or "{" not in value:
        return value
    environment = _NATIVE if _is_one_expression(value) else _JINJA
    try:
        rendered = environment.from_string(value).render(context)
    except (TemplateError, TypeError, ValueError) as exc:
        raise ValidationError(f"{path}: {exc}", field=path) from None
    if isinstance(rendered, Undefined):
        raise ValidationError(f"{path}: {value!r} reads what is not there", field=path)
    return rendered


def _is_one_expression(text: str) -> bool:
    try:
        body = _JINJA.parse(text).body
    except TemplateError:
        return False
    return len(body) == 1 and isinstance(body[0], nodes.Output) and len(body[0].nodes) == 1
