"""The healthcheck report: text and HTML that read well in an email.

Failures come first, each with its examples, then what passed and what was skipped.
Both are rendered from ``templates/`` (HTML autoescaped: example rows are data
from the checked database) after credentials are masked.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from prodinf.redact import redact

__all__ = ["render_report", "verdict"]


def verdict(result: dict[str, Any]) -> str:
    """One line: what the healthcheck found (also the mail subject a report suits)."""
    summary = result["summary"]
    where = result.get("database_name") or result["database"]
    if result["passed"]:
        return f"Healthchecks passed on {where}: all {summary['passed']} checks"
    names = ", ".join(c["name"] for c in result["checks"] if not c["passed"])
    return f"Healthchecks FAILED on {where}: {summary['failed']} of {summary['run']} ({names})"


def render_report(result: dict[str, Any]) -> dict[str, str]:
    """``{"subject", "text", "html"}`` for a healthcheck result (see the kind's docs)."""
    shown = redact(result)
    context = {
        "verdict": verdict(shown),
        "ok": shown["passed"],
        "database": shown["database"],
        "dataset": shown.get("dataset"),
        "summary": shown["summary"],
        "failed": [c for c in shown["checks"] if not c["passed"]],
        "passed": [c for c in shown["checks"] if c["passed"]],
        "skipped": shown.get("skipped", []),
    }
    env = _templates()
    return {
        "subject": context["verdict"],
        "text": env.get_template("report.txt").render(context),
        "html": env.get_template("report.html").render(context),
    }


def _format_row(row: dict[str, Any]) -> str:
    return ", ".join(f"{key}={'NULL' if value is None else value}" for key, value in row.items())


@lru_cache(maxsize=1)
def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = _format_row
    return env
