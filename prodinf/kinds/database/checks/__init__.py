"""Healthchecks: the catalogue, the context a check sees, the built-in check types,
and the report.

A plugin adds a Python check with :func:`healthcheck`; see ``docs/kinds.rst``.
"""

from prodinf.kinds.database.checks.catalogue import (
    DEFAULT_CATALOGUE,
    Catalogue,
    CheckSpec,
    healthcheck,
    load_catalogue,
)
from prodinf.kinds.database.checks.context import MAX_EXAMPLES, CheckContext, Finding
from prodinf.kinds.database.checks.report import render_report

__all__ = [  # noqa: RUF022 (grouped by purpose)
    # the catalogue
    "DEFAULT_CATALOGUE",
    "Catalogue",
    "CheckSpec",
    "healthcheck",
    "load_catalogue",
    # writing a check
    "MAX_EXAMPLES",
    "CheckContext",
    "Finding",
    # the report
    "render_report",
]
