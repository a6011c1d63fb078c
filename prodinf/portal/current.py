"""The runtime of the portal app handling the current request."""

from __future__ import annotations

from flask import Flask, current_app

from prodinf.runtime import Runtime

__all__ = ["runtime", "runtime_of"]

#: Where ``create_app`` keeps the runtime, in ``app.extensions``.
EXTENSION = "prodinf"


def runtime_of(app: Flask) -> Runtime:
    """The runtime ``app`` was made with."""
    rt: Runtime = app.extensions[EXTENSION]
    return rt


def runtime() -> Runtime:
    """The runtime of the app handling the current request."""
    return runtime_of(current_app)
