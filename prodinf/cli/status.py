"""``prodinf status [--watch [SECONDS]] [--json]``: queues, workers, jobs by status and
the latest failures, at a glance (gathered by :mod:`prodinf.portal.status_report`,
imported when the command runs: the portal is a second to import, which no other
command should wait for)."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from prodinf.cli.common import console, make_runtime, reports_errors
from prodinf.cli.jobs import STATUS_STYLE
from prodinf.exceptions import ProdinfError
from prodinf.store.search import human_duration

__all__ = ["render", "status"]

#: Seconds between refreshes of ``--watch`` given no number.
WATCH_EVERY = 2.0
#: Failed jobs listed unless ``-n`` says otherwise.
FAILURES = 10


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _ago(seconds: float | None) -> str:
    return "" if seconds is None else f"{human_duration(seconds)} ago"


def render(report: dict[str, Any]) -> RenderableType:
    """The report as rich tables: queues, workers, jobs by status, latest failures."""
    broker = report["broker"]
    said = f"[red]{escape(broker['error'])}[/]" if broker["error"] else escape(broker["url"])
    header = Text.from_markup(f"prodinf at {report['at'][:19]}Z · broker {said}")

    queues = Table(
        "queue",
        "broker queue",
        Column("messages", justify="right"),
        Column("lane", justify="right"),
        Column("consumers", justify="right"),
        Column("workers", justify="right"),
        "oldest queued job",
        title="queues",
        title_justify="left",
    )
    for q in report["queues"]:
        idle = q["workers"] == 0 and q["consumers"] in (0, None)
        queues.add_row(
            q["queue"],
            escape(q["name"]),
            _count(q["messages"]),
            _count(q["lane_messages"]),
            _count(q["consumers"]),
            f"[red]{q['workers']}[/]" if idle else str(q["workers"]),
            _ago(q["oldest_queued_seconds"]).removesuffix(" ago"),
        )

    workers = Table("worker", "queues", "pid", "seen", title="workers", title_justify="left")
    for w in report["workers"]:
        workers.add_row(
            escape(w["name"]), escape(", ".join(w["queues"])), str(w["pid"]),
            _ago(w["seen_seconds_ago"]),
        )  # fmt: skip
    if not report["workers"]:
        workers.add_row("[red]none seen in the last minute[/]", "", "", "")

    counts = report["counts"]
    jobs = Table(*(Column(s, justify="right") for s in counts), title="jobs", title_justify="left")
    jobs.add_row(
        *(f"[{STATUS_STYLE.get(s, 'white')}]{n}[/]" if n else "0" for s, n in counts.items())
    )

    failures = Table(
        Column("id", no_wrap=True), "kind", "ended", "step", "error",
        title="latest failures", title_justify="left",
    )  # fmt: skip
    for f in report["failures"]:
        failures.add_row(
            f["id"], escape(f["kind"]), (f["finished_at"] or "")[:19], escape(f["step"] or ""),
            f"[red]{escape(f['error'])}[/]",
        )  # fmt: skip
    if not report["failures"]:
        failures.add_row("none", "", "", "", "")
    return Group(header, queues, workers, jobs, failures)


@click.command()
@click.option(
    "--watch",
    "-w",
    type=click.FloatRange(min=0.5),
    is_flag=False,
    flag_value=WATCH_EVERY,
    default=None,
    metavar="[SECONDS]",
    help=f"Refresh in place every SECONDS (default {WATCH_EVERY:g}) until Ctrl-C.",
)
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON (a line each refresh).")
@click.option(
    "-n",
    "--failures",
    type=click.IntRange(0, 100),
    default=FAILURES,
    show_default=True,
    help="How many of the latest failed jobs to list.",
)
@reports_errors
def status(watch: float | None, as_json: bool, failures: int) -> None:
    """Queues (waiting messages, consumers, oldest queued job), workers, jobs by status
    and the latest failures with their error."""
    from prodinf.portal.status_report import status_report

    rt = make_runtime()
    try:
        if watch is None:
            report = status_report(rt, failures=failures)
            if as_json:
                click.echo(json.dumps(report, indent=2))
            else:
                console.print(render(report))
            return
        _watch(rt, watch, as_json, failures)
    finally:
        rt.close()


def _watch(rt: Any, every: float, as_json: bool, failures: int) -> None:
    """Refresh until Ctrl-C; a store that cannot be read is said in place of the report,
    and asked again at the next refresh."""
    from prodinf.portal.status_report import status_report

    def latest() -> tuple[dict[str, Any] | None, RenderableType]:
        try:
            report = status_report(rt, failures=failures)
        except ProdinfError as exc:
            return None, Text(f"cannot read the store: {exc.message} (trying again)", "red")
        return report, render(report)

    try:
        if as_json:
            while True:
                report, shown = latest()
                click.echo(json.dumps(report if report is not None else {"error": str(shown)}))
                time.sleep(every)
        with Live(latest()[1], console=console, auto_refresh=False) as live:
            while True:
                time.sleep(every)
                live.update(latest()[1], refresh=True)
    except KeyboardInterrupt:
        pass
