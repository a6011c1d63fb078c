"""``prodinf post | show | cancel | retry | kinds``: submit and follow jobs from a shell."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from prodinf.cli.common import console, make_runtime, reports_errors, warn_unless_consumed
from prodinf.exceptions import ValidationError
from prodinf.status import TERMINAL, JobStatus
from prodinf.store.search import ORDERS, SORTS, human_duration, parse_when

__all__ = ["cancel", "kinds", "notify", "post", "retry", "show"]

STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "reverted": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "waiting": "magenta",
    "queued": "white",
}


def parse_params(
    pairs: tuple[str, ...], raw_json: str | None, option: str = "--param"
) -> dict[str, Any]:
    """``key=value`` pairs of ``option`` (values parsed as JSON when they are JSON) over
    ``--json``."""
    params: dict[str, Any] = {}
    if raw_json:
        try:
            loaded = json.loads(raw_json)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"--json is not valid JSON: {exc}", field="--json") from None
        if not isinstance(loaded, dict):
            raise ValidationError("--json must be a JSON object", field="--json")
        params.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationError(f"{option} {pair!r} is not key=value", field=option)
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


#: Characters of a job's id a narrow table shows; terminals narrower than WIDE get them.
SHORT_ID, WIDE = 8, 120


def lists_from_commas(
    schema: dict[str, Any], params: dict[str, Any], pairs: tuple[str, ...]
) -> dict[str, Any]:
    """``params`` with each list param given as ``-p key=a,b`` split into ``[a, b]``
    (``-p 'key=["a","b"]'`` is a list already)."""
    properties = schema.get("properties", {})
    for key in {pair.partition("=")[0] for pair in pairs}:
        if properties.get(key, {}).get("type") == "array" and isinstance(params.get(key), str):
            params[key] = [part.strip() for part in params[key].split(",") if part.strip()]
    return params


@click.command()
@click.argument("kind")
@click.option(
    "-p",
    "--param",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A param; repeat for more. JSON values (numbers, true) are parsed; a list "
    "param takes a,b,c.",
)
@click.option("--json", "raw_json", metavar="OBJECT", help="All params as one JSON object.")
@click.option("--idempotency-key", help="Submitting the same key again returns the same job.")
@click.option(
    "--notify-email",
    "emails",
    multiple=True,
    metavar="ADDRESS",
    help="Mail ADDRESS a summary when the job ends; repeat for more.",
)
@click.option("--webhook", metavar="URL", help="POST a signed JSON summary to URL when it ends.")
@click.option("--wait", is_flag=True, help="Follow the job with a progress bar until it ends.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after seconds.")
@reports_errors
def post(
    kind: str,
    pairs: tuple[str, ...],
    raw_json: str | None,
    idempotency_key: str | None,
    emails: tuple[str, ...],
    webhook: str | None,
    wait: bool,
    timeout: float | None,
) -> None:
    """Submit a job of KIND. Exits 1 if --wait sees it end in anything but success."""
    import getpass

    rt = make_runtime()
    notify: dict[str, Any] = {}
    if emails:
        notify["email"] = list(emails)
    if webhook is not None:
        notify["webhook"] = webhook
    spec = rt.jobs.submittable(kind)  # not one prodinf makes itself
    params = lists_from_commas(spec.schema(), parse_params(pairs, raw_json), pairs)
    job, created = rt.jobs.submit(
        kind,
        params,
        idempotency_key=idempotency_key,
        submitted_by=getpass.getuser(),
        notify=notify or None,
    )
    click.echo(f"{'submitted' if created else 'existing'} {job['kind']} job {job['id']}")
    warn_unless_consumed(rt, kind)
    if wait:
        follow_to_end(rt, job["id"], timeout)


@click.command()
@click.argument("url")
@click.argument("address")
@click.option("--interval", type=float, default=None, help="Seconds between looks [60].")
@click.option("--wait", is_flag=True, help="Follow the notification until the email is sent.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after seconds.")
@reports_errors
def notify(
    url: str, address: str, interval: float | None, wait: bool, timeout: float | None
) -> None:
    """Email ADDRESS once URL reports a final status (a prodinf job URL works)."""
    import getpass

    rt = make_runtime()
    params: dict[str, Any] = {"url": url, "address": address}
    if interval is not None:
        params["interval"] = interval
    job, _ = rt.jobs.submit("email_when_complete", params, submitted_by=getpass.getuser())
    click.echo(f"notification {job['id']}: {address} will be mailed when {url} is done")
    if wait:
        follow_to_end(rt, job["id"], timeout)


def follow_to_end(rt: Any, job_id: str, timeout: float | None) -> None:
    """``--wait``: follow the job, print how it ended, and exit 1 unless it succeeded."""
    detail = follow(rt, job_id, timeout)
    print_job(detail)
    if detail["status"] != JobStatus.SUCCEEDED:
        raise SystemExit(1)


def follow(rt: Any, job_id: str, timeout: float | None) -> dict[str, Any]:
    """Poll the store, showing a progress bar, until the job ends (or ``timeout``)."""
    started = time.monotonic()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.fields[steps]} steps"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[msg]}"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(JobStatus.QUEUED, total=None, msg="", steps="?")
        while True:
            detail: dict[str, Any] = rt.store.describe(job_id)
            bar = detail["progress"]
            progress.update(
                task,
                description=detail["status"],
                completed=bar["done"],
                total=bar["total"] or None,
                steps=bar["total"] or "?",
                msg=(bar["message"] or "")[:60],
            )
            if detail["status"] in TERMINAL:
                return detail
            if timeout is not None and time.monotonic() - started > timeout:
                raise click.ClickException(
                    f"job {job_id} still {detail['status']} after {timeout:.0f}s"
                )
            time.sleep(0.2)


def print_job(detail: dict[str, Any]) -> None:
    style = STATUS_STYLE.get(detail["status"], "white")
    console.print(f"[bold]{detail['kind']}[/] job {detail['id']}: [{style}]{detail['status']}[/]")
    steps = Table("step", "status", "attempts", "waiting for / error", title="steps")
    for step in detail["steps"]:
        note = step["waiting_for"] or (step["error"] or {}).get("message") or ""
        steps.add_row(step["name"], step["status"], str(step["attempts"]), note)
    console.print(steps)
    history = Table("at", "event", "step", "message", title="history")
    for row in detail["history"]:
        history.add_row(row["at"][:23], row["event"], row["step"] or "", row["message"] or "")
    console.print(history)
    report = report_of(detail)
    if detail["result"] is not None and report is None:
        # escaped: a result's text such as "[prodinf] ..." is not rich markup
        console.print("result:", escape(json.dumps(detail["result"], indent=2)))
    if detail["error"]:
        error = detail["error"]
        console.print(f"[red]error[/]: {escape(error['type'])}: {escape(error['message'])}")
        if error.get("details") and report is None:
            console.print("details:", escape(json.dumps(error["details"], indent=2)))
    if report is not None:  # a healthcheck's report: each check, its count and examples
        console.print(escape(report.rstrip()), highlight=False)


def report_of(detail: dict[str, Any]) -> str | None:
    """The text report a job's result or error details carry (a healthcheck's), or None."""
    for holder in (detail.get("result"), (detail.get("error") or {}).get("details")):
        report = holder.get("report") if isinstance(holder, dict) else None
        if isinstance(report, dict) and isinstance(report.get("text"), str):
            return str(report["text"])
    return None


@click.command()
@click.argument("job_id", required=False)
@click.option("--kind", help="Only jobs of this kind.")
@click.option("--status", type=click.Choice(tuple(STATUS_STYLE)), help="Only jobs in this status.")
@click.option("--id", "id_prefix", metavar="START", help="Only jobs whose id starts with START.")
@click.option(
    "-q",
    "--search",
    "text",
    metavar="TEXT",
    help="Only jobs whose params hold TEXT, ignoring case (a database name).",
)
@click.option("--submitted-by", metavar="USER", help="Only jobs USER submitted.")
@click.option(
    "--since",
    metavar="WHEN",
    help="Only jobs created at or after WHEN: 2024-05-01 or 2024-05-01T12:00 (UTC unless "
    "it names a zone).",
)
@click.option(
    "--until",
    metavar="WHEN",
    help="Only jobs created before WHEN; a date alone takes all of that day.",
)
@click.option(
    "--sort",
    type=click.Choice(SORTS),
    default="created",
    show_default=True,
    help="duration: from start to end (or now); jobs never started last.",
)
@click.option("--order", type=click.Choice(ORDERS), default="desc", show_default=True)
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@reports_errors
def show(
    job_id: str | None,
    kind: str | None,
    status: str | None,
    id_prefix: str | None,
    text: str | None,
    submitted_by: str | None,
    since: str | None,
    until: str | None,
    sort: str,
    order: str,
    limit: int,
    as_json: bool,
) -> None:
    """A table of recent jobs (searched and sorted by the options), or one job's steps
    and history."""
    rt = make_runtime()
    if job_id:
        detail = rt.store.describe(rt.store.resolve_id(job_id))
        if as_json:
            click.echo(json.dumps(detail, indent=2))
        else:
            print_job(detail)
        return
    items, total = rt.store.list_jobs(
        kind=kind,
        status=status,
        id_prefix=id_prefix,
        text=text,
        submitted_by=submitted_by,
        created_after=parse_when(since, "--since") if since else None,
        created_before=parse_when(until, "--until", end_of_day=True) if until else None,
        sort=sort,
        order=order,
        limit=limit,
    )
    if as_json:
        click.echo(json.dumps({"items": items, "total": total}, indent=2))
        return
    # In a narrow terminal, the 8 characters that name a job (show/cancel/retry take a
    # unique start of an id), whole, rather than a full id cut to an unusable stump.
    width = SHORT_ID if console.width < WIDE else 36
    table = Table(
        Column("id", no_wrap=True, min_width=width),
        "kind",
        "status",
        "progress",
        "created",
        Column("duration", no_wrap=True),
        title=f"{total} job(s)",
    )
    for job in items:
        bar = job["progress"]
        style = STATUS_STYLE.get(job["status"], "white")
        table.add_row(
            job["id"][:width],
            job["kind"],
            f"[{style}]{job['status']}[/]",
            escape(f"{bar['done']}/{bar['total']} {bar['message'] or ''}"[:60]),
            job["created_at"][:19],
            human_duration(job["duration_seconds"]),
        )
    console.print(table)


@click.command()
@click.argument("job_id")
@reports_errors
def cancel(job_id: str) -> None:
    """Cancel a job (at once if queued or waiting, after its current step if running)."""
    rt = make_runtime()
    job_id = rt.store.resolve_id(job_id)
    job = rt.jobs.cancel(job_id)
    click.echo(f"job {job_id}: {job['status']}")


@click.command()
@click.argument("job_id")
@reports_errors
def retry(job_id: str) -> None:
    """Run a failed, reverted or cancelled job again from where it stopped."""
    rt = make_runtime()
    job_id = rt.store.resolve_id(job_id)
    job = rt.jobs.retry(job_id)
    click.echo(f"job {job_id}: {job['status']}")


@click.command()
@reports_errors
def kinds() -> None:
    """The registered kinds and their params."""
    rt = make_runtime(migrate=False)
    table = Table("kind", "queue", "params", "description")
    for kind in rt.registry.all():
        schema = kind.schema()
        required = set(schema.get("required", []))
        params = ", ".join(
            f"{name}{'*' if name in required else ''}" for name in schema.get("properties", {})
        )
        table.add_row(kind.name, rt.settings.queue_for(kind.queue), params, kind.description)
    console.print(table)
