"""``prodinf logs JOB [--step NAME] [--follow]``: what a job's steps logged."""

from __future__ import annotations

import time

import click

from prodinf.cli.common import make_runtime, reports_errors
from prodinf.status import TERMINAL
from prodinf.store.steplogs import line_text, read_lines

__all__ = ["logs"]

#: Lines read from the store at a time.
PAGE = 1000
#: Seconds between looks for new lines with ``--follow``.
FOLLOW_EVERY = 0.5
_COLOURS = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "red"}


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option("--step", help="Only this step's lines.")
@click.option("--attempt", type=click.IntRange(1), help="Only this attempt's lines (1: first).")
@click.option(
    "-f", "--follow", is_flag=True, help="Print new lines as they come, until the job ends."
)
@reports_errors
def logs(job_id: str, step: str | None, attempt: int | None, follow: bool) -> None:
    """What a job's steps logged, oldest first (each attempt keeps its newest 500 lines,
    credentials masked). JOB is a job's id or a unique start of it (6+ characters)."""
    rt = make_runtime()
    store = rt.store
    job_id = store.resolve_id(job_id)
    after = 0
    while True:
        # The status first: a step's lines are stored before its end, so once the job
        # has ended, the reading after it holds every line.
        status = store.describe(job_id)["status"] if follow else None
        while True:
            items = read_lines(store, job_id, step=step, attempt=attempt, after=after, limit=PAGE)
            for item in items:
                text = line_text(item)
                colour = _COLOURS.get(item["level"])
                click.echo(click.style(text, fg=colour) if colour else text)
            if items:
                after = items[-1]["seq"]
            if len(items) < PAGE:
                break
        if not follow or status in TERMINAL:
            break
        time.sleep(FOLLOW_EVERY)
    if follow:
        click.echo(f"job {job_id}: {status}", err=True)
