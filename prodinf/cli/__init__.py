"""``prodinf``: start prodinf, submit and follow jobs, manage the store.

::

    prodinf up                 portal + a worker per queue + scheduler, embedded defaults
    prodinf worker -Q email    one worker
    prodinf post KIND --param key=value [--wait]
    prodinf handover SRC_URI --contact ADDR --comment TEXT [--wait]
    prodinf show [ID]
    prodinf logs ID [--step NAME] [--follow]
    prodinf status [--watch [SECONDS]] [--json]
    prodinf user add NAME --role ROLE | prodinf token create --user NAME
    prodinf db upgrade | prodinf config
"""

from __future__ import annotations

import click

from prodinf.cli.admin import config_cmd, db
from prodinf.cli.events import event_cmd
from prodinf.cli.handovers import (
    handover_cmd,
    handover_restart,
    handover_show,
    handover_stop,
    handovers_cmd,
)
from prodinf.cli.jobs import cancel, kinds, notify, post, retry, show
from prodinf.cli.logs import logs
from prodinf.cli.serve import portal, scheduler, up, worker
from prodinf.cli.status import status
from prodinf.cli.users import token, user

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="prodinf")
def main() -> None:
    """prodinf: durable production jobs on Celery, with a job store, a portal and a CLI."""


for command in (
    up,
    worker,
    scheduler,
    portal,
    post,
    notify,
    event_cmd,
    handover_cmd,
    handovers_cmd,
    handover_show,
    handover_stop,
    handover_restart,
    show,
    logs,
    status,
    cancel,
    retry,
    kinds,
    db,
    config_cmd,
    user,
    token,
):
    main.add_command(command)
