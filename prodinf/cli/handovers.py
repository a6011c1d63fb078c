"""``prodinf handover | handovers | handover-show | handover-stop | handover-restart``:
hand a database over to staging from a shell and follow it stage by stage.

A refusal (a check failed, the database has an unfinished handover, no such handover,
a restart of one that has not ended) prints its message naming the field and exits 2;
anything else that goes wrong (store or broker down) exits 1, as other commands do.
"""

from __future__ import annotations

import functools
import getpass
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy import select

from prodinf.cli.common import console, make_runtime, said, warn_unless_consumed
from prodinf.exceptions import Conflict, NotFound, ProdinfError, ValidationError
from prodinf.kinds.handover import Handovers
from prodinf.kinds.handover.checks import NOTIFY
from prodinf.kinds.handover.config import STAGES
from prodinf.kinds.handover.kind import HANDOVER_KIND
from prodinf.kinds.handover.report import handover_detail, handover_status
from prodinf.status import HANDOVER_STATUS, TERMINAL, HandoverStatus, JobStatus, StepStatus
from prodinf.store.handovers import get_handover, list_handovers
from prodinf.store.models import HANDOVERS

__all__ = [
    "handover_cmd",
    "handover_restart",
    "handover_show",
    "handover_stop",
    "handovers_cmd",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Seconds between looks at a handover followed with ``--wait``.
POLL = 0.5
#: Characters of a token shown in the list (any unique prefix is taken back).
SHORT = 8
#: The words ``--status`` takes: a handover's own.
WORDS = tuple(s.value for s in HandoverStatus)
STYLE = {
    HandoverStatus.SUCCEEDED: "green",
    HandoverStatus.FAILED: "red",
    HandoverStatus.STOPPED: "yellow",
    HandoverStatus.RUNNING: "cyan",
    HandoverStatus.QUEUED: "white",
}


class Refused(click.ClickException):
    """A handover refused (a check, a duplicate, an unknown token): exit status 2."""

    exit_code = 2


def reports_refusals(fn: F) -> F:
    """As ``reports_errors``, but a refusal exits 2; a 409 names the handover in the way."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValidationError, Conflict, NotFound) as exc:
            raise Refused(_said(exc)) from None
        except ProdinfError as exc:
            raise click.ClickException(_said(exc)) from None

    return wrapper  # type: ignore[return-value]


def _said(exc: ProdinfError) -> str:
    token = exc.details.get("token")
    held = f"\nthe unfinished handover: {token}" if isinstance(exc, Conflict) and token else ""
    return f"{said(exc)}{held}"


def resolve(store: Any, token: str) -> str:
    """The full token of handover ``token`` or of the one handover it is a prefix of.

    :raises NotFound: none is; :raises ValidationError: more than one is.
    """
    if get_handover(store, token) is not None:
        return token
    if len(token) >= 4 and token.replace("-", "").isalnum():
        with store.transaction() as conn:
            found = list(
                conn.scalars(
                    select(HANDOVERS.c.token).where(HANDOVERS.c.token.startswith(token)).limit(2)
                )
            )
        if len(found) == 1:
            return str(found[0])
        if found:
            raise ValidationError(f"{token!r} is the start of several tokens", field="token")
    raise NotFound(f"no handover {token!r}", field="token")


def page_url(settings: Any, token: str) -> str | None:
    """The handover's page, when ``PRODINF_PUBLIC_URL`` says where the portal is."""
    return f"{settings.public_url}/handovers/{token}" if settings.public_url else None


def seconds(stage: dict[str, Any]) -> float | None:
    """How long a stage ran, from its start to its end, or ``None``."""
    if not stage["started_at"] or not stage["finished_at"]:
        return None
    start, end = (datetime.fromisoformat(stage[k]) for k in ("started_at", "finished_at"))
    return (end - start).total_seconds()


def moment(iso: str | None) -> str:
    """``2026-11-30 07:06:21`` (UTC) of an ISO time, or nothing."""
    return (iso or "")[:19].replace("T", " ")


def stage_line(stage: dict[str, Any]) -> str:
    """``copy  succeeded  (3.2 s)``, with what it waits for or why it failed."""
    took = seconds(stage)
    parts = [f"{stage['name']:<11}", f"{stage['status']:<9}"]
    if took is not None:
        parts.append(f"({took:.1f} s)")
    note = stage["error"] or stage["waiting_for"]
    if note:
        parts.append(str(note))
    return "  ".join(parts).rstrip()


@click.command("handover")
@click.argument("src_uri")
@click.option("--contact", required=True, metavar="ADDRESS", help="Who is told how it ends.")
@click.option("--comment", required=True, metavar="TEXT", help="What this handover is.")
@click.option(
    "--notify",
    type=click.Choice(NOTIFY),
    default=NOTIFY[0],
    show_default=True,
    help="Mail the contact at every end, or only when it does not succeed.",
)
@click.option("--wait", is_flag=True, help="Show the stages as they pass, until it ends.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after seconds.")
@reports_refusals
def handover_cmd(
    src_uri: str, contact: str, comment: str, notify: str, wait: bool, timeout: float | None
) -> None:
    """Hand the database SRC_URI over to staging: checked now, then healthcheck, copy,
    metadata and events. Exits 2 if a check refuses it; with --wait, 0 if it succeeds
    and 1 otherwise."""
    rt = make_runtime()
    made = Handovers(rt.store, rt.registry, rt.settings, rt.publish).submit(
        {"src_uri": src_uri, "contact": contact, "comment": comment, "notify": notify},
        submitted_by=getpass.getuser(),
    )
    token = str(made["token"])
    click.echo(f"handover {token}: {made['database']} {handover_status(made['status'])}")
    page = page_url(rt.settings, token)
    if page:
        click.echo(f"page: {page}")
    warn_unless_consumed(rt, HANDOVER_KIND)
    if wait:
        follow_stages(rt, token, timeout)


def follow_stages(rt: Any, token: str, timeout: float | None) -> None:
    """``--wait``: print a line each time a stage changes status; exit 1 unless the
    handover succeeded."""
    started = time.monotonic()
    seen: dict[str, str] = {}
    while True:
        found = handover_detail(rt.store, token)
        for stage in found["stages"]:
            if seen.get(stage["name"], StepStatus.PENDING) != stage["status"]:
                click.echo(stage_line(stage))
            seen[stage["name"]] = stage["status"]
        if found["job_status"] in TERMINAL:
            break
        if timeout is not None and time.monotonic() - started > timeout:
            raise click.ClickException(
                f"handover {token} still {found['status']} at {found['stage']} after {timeout:.0f}s"
            )
        time.sleep(POLL)
    end = f"handover {token}: {found['status']}"
    if found["error"]:
        end += f" at {found['error']['stage']}: {found['error']['message']}"
    click.echo(end)
    if found["job_status"] != JobStatus.SUCCEEDED:
        raise SystemExit(1)


@click.command("handovers")
@click.option("--status", type=click.Choice(WORDS), help="Only handovers in this state.")
@click.option("--database", help="Only handovers of this database.")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, with the full tokens.")
@reports_refusals
def handovers_cmd(status: str | None, database: str | None, limit: int, as_json: bool) -> None:
    """A table of recent handovers, newest first."""
    rt = make_runtime()
    statuses = [str(j) for j, h in HANDOVER_STATUS.items() if h == status] if status else None
    items, total = list_handovers(rt.store, database=database, statuses=statuses, limit=limit)
    rows = []
    for item in items:
        found = handover_detail(rt.store, item["token"])
        rows.append(
            {
                "token": item["token"],  # handover_detail masks it (its key says token)
                **{k: found[k] for k in ("database", "type", "release", "status")},
                "stage": found["stage"],
                "created_at": found["created_at"],
            }
        )
    if as_json:
        click.echo(json.dumps({"items": rows, "total": total}, indent=2))
        return
    table = Table(
        Column("token", min_width=SHORT),
        Column("database", overflow="fold"),
        Column("type", min_width=4),
        Column("release", min_width=3),
        Column("status", min_width=9),
        Column("stage", min_width=11),
        Column("created", overflow="fold"),
        title=f"{total} handover(s)",
    )  # fmt: skip
    for row in rows:
        style = STYLE.get(row["status"], "white")
        table.add_row(
            row["token"][:SHORT],
            row["database"],
            row["type"],
            str(row["release"]),
            f"[{style}]{row['status']}[/]",
            row["stage"] or "",
            moment(row["created_at"])[:16],
        )
    console.print(table)


@click.command("handover-show")
@click.argument("token")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON document.")
@reports_refusals
def handover_show(token: str, as_json: bool) -> None:
    """One handover: its database, each stage with its times and error, its events."""
    rt = make_runtime()
    full = resolve(rt.store, token)
    found = {**handover_detail(rt.store, full), "token": full}  # it masks the token key
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    style = STYLE.get(found["status"], "white")
    console.print(
        f"[bold]handover[/] {found['token']}: {found['database']} "
        f"([{style}]{found['status']}[/]{', at ' + found['stage'] if found['stage'] else ''})"
    )
    for label, key in (
        ("source", "src_uri"),
        ("staging", "staging"),
        ("contact", "contact"),
        ("comment", "comment"),
    ):
        if found[key]:
            console.print(f"  {label:<9} {found[key]}", highlight=False)
    for label, key in (("created", "created_at"), ("finished", "finished_at")):
        if found[key]:
            console.print(f"  {label:<9} {moment(found[key])} UTC", highlight=False)
    page = page_url(rt.settings, found["token"])
    if page:
        console.print(f"  page      {page}", highlight=False)
    stages = Table(
        Column("stage", min_width=11),
        Column("status", min_width=9),
        Column("started", overflow="fold"),
        Column("took", min_width=5),
        Column("job", overflow="fold"),
        Column("error / waiting for", overflow="fold"),
    )  # fmt: skip
    for stage in found["stages"]:
        took = seconds(stage)
        job = stage["job"]
        where = f" on {stage['service']}" if stage["service"] else ""
        stages.add_row(
            stage["name"],
            stage["status"],
            moment(stage["started_at"]),
            f"{took:.1f} s" if took is not None else "",
            f"{job['kind']} {job['id']}{where}" if job else where.strip(),
            stage["error"] or stage["waiting_for"] or "",
        )
    console.print(stages)
    if found["error"]:
        error = found["error"]
        said = escape(str(error["message"]))
        console.print(f"[red]error[/] at {error['stage']}: {said}", highlight=False)
    if found["events"]:
        console.print(
            "events: " + ", ".join(f"{e['type']} {e['event_id']}" for e in found["events"])
        )


@click.command("handover-stop")
@click.argument("token")
@reports_refusals
def handover_stop(token: str) -> None:
    """Stop a handover; the job of the stage it is at is cancelled too. Exits 2 if it
    has ended already."""
    rt = make_runtime()
    full = resolve(rt.store, token)
    stopped = Handovers(rt.store, rt.registry, rt.settings, rt.publish).stop(full)
    click.echo(f"handover {full}: {handover_status(stopped['status'])}")


@click.command("handover-restart")
@click.argument("token")
@click.option(
    "--from", "since", required=True, type=click.Choice(STAGES), help="The stage to run from."
)
@reports_refusals
def handover_restart(token: str, since: str) -> None:
    """Run an ended handover again from a stage. Exits 2 if it has not ended, or another
    handover of its database runs."""
    rt = make_runtime()
    full = resolve(rt.store, token)
    made = Handovers(rt.store, rt.registry, rt.settings, rt.publish).restart(full, since)
    click.echo(f"handover {full}: {handover_status(made['status'])} from {made['from']}")
