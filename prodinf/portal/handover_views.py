"""Web pages for handovers: the list, the form, one handover's stage timeline, and the
bulk form and page."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue

from prodinf.kinds.handover.report import handover_detail
from prodinf.portal.current import runtime
from prodinf.portal.views import REFRESH_SECONDS

__all__ = ["blueprint"]

blueprint = Blueprint("handover_pages", __name__)


@blueprint.get("/handovers/<token>")
def handover(token: str) -> ResponseReturnValue:
    """A handover: its database, status, and each stage on a timeline."""
    found = handover_detail(runtime().store, token)
    running = found["status"] in ("queued", "running")
    return render_template(
        "handover.html", handover=found, refresh=REFRESH_SECONDS if running else None
    )
