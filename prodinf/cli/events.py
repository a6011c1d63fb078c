"""``prodinf event``: record what happened to a dataset, and follow what it starts."""

from __future__ import annotations

import getpass
import json

import click

from prodinf.cli.common import make_runtime, reports_errors, warn_unless_consumed
from prodinf.cli.jobs import follow_to_end, parse_params


@click.command("event")
@click.argument("type_", metavar="TYPE")
@click.option("--dataset", help="The database the event concerns.")
@click.option(
    "--payload",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A payload field; repeat for more. JSON values (numbers, true) are parsed.",
)
@click.option("--idempotency-key", help="Recording the same key again returns the same event.")
@click.option("--dry-run", is_flag=True, help="Show the processes it would start; record nothing.")
@click.option("--wait", is_flag=True, help="Follow the event's job until it ends.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after seconds.")
@reports_errors
def event_cmd(
    type_: str,
    dataset: str | None,
    pairs: tuple[str, ...],
    idempotency_key: str | None,
    dry_run: bool,
    wait: bool,
    timeout: float | None,
) -> None:
    """Record an event of TYPE; its job starts every process subscribed to it. Exits 1 if
    --wait sees it end in anything but success."""
    from prodinf.kinds.event_record import preview_event, record_event

    rt = make_runtime()
    document = {
        "type": type_,
        "dataset": dataset,
        "payload": parse_params(pairs, None, "--payload"),
        "source": getpass.getuser(),
        "idempotency_key": idempotency_key,
    }
    document = {k: v for k, v in document.items() if v is not None}
    if dry_run:
        _, matches = preview_event(rt.settings, rt.registry, document)
        if not matches:
            click.echo("no subscription matches this event")
        for match in matches:
            after = f" after {', '.join(match.after)}" if match.after else ""
            said = match.error or json.dumps(match.params, sort_keys=True)
            click.echo(f"{match.subscription}: {match.kind}{after}: {said}")
        return
    event, created = record_event(rt.store, rt.registry, rt.settings, rt.publish, document)
    starts = ", ".join(p["subscription"] for p in event.get("processes", [])) or "nothing"
    click.echo(f"{'recorded' if created else 'existing'} event {event['id']}: starts {starts}")
    warn_unless_consumed(rt, "event")
    if wait:
        follow_to_end(rt, event["job_id"], timeout)
