"""``/dashboard``: is it healthy, what is slow, what failed, on one live page.

Queues (messages waiting, consumers, workers, the oldest queued job's wait), the
workers seen in the last minute and the steps running now with the worker holding
each, the jobs that ended in each five minutes of the last hour by outcome (a chart
drawn on the server, as SVG: no script needed), the latest failures with links, the
handovers in flight by stage, and the jobs by status. What ``prodinf status`` says,
from the same report (``portal/status_report.py``), and live like every page whose
work goes on (``static/live.js``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue

from prodinf.kinds.handover.kind import HANDOVER_KIND
from prodinf.portal.current import runtime
from prodinf.portal.job_list import counted
from prodinf.portal.status_report import status_report
from prodinf.portal.views import REFRESH_SECONDS
from prodinf.status import JobStatus
from prodinf.store.activity import Slot, ended_by_slot, running_steps
from prodinf.store.gauges import unfinished
from prodinf.store.search import COUNT_LIMIT, human_duration
from prodinf.store.types import utcnow

__all__ = ["blueprint", "chart"]

blueprint = Blueprint("dashboard", __name__)

#: The chart of the last hour: slots of five minutes, drawn this large (SVG units).
SPAN = timedelta(hours=1)
SLOTS = 12
WIDTH, HEIGHT = 600, 120
#: The outcomes the chart stacks, bottom first, each drawn in its own colour (style.css).
OUTCOMES = tuple(
    str(s) for s in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.REVERTED, JobStatus.CANCELLED)
)


def chart(slots: list[Slot]) -> dict[str, Any]:
    """Bars (x, y, width, height, outcome, count, slot start) scaled to the busiest slot."""
    width, height = WIDTH, HEIGHT
    most = max((slot.total for slot in slots), default=0) or 1
    step = width / max(1, len(slots))
    bars = []
    for i, slot in enumerate(slots):
        base = float(height)
        for outcome in OUTCOMES:
            count = slot.ended.get(outcome, 0)
            if not count:
                continue
            tall = height * count / most
            base -= tall
            bars.append(
                {
                    "x": round(i * step + 2, 1),
                    "y": round(base, 1),
                    "width": round(step - 4, 1),
                    "height": round(tall, 1),
                    "outcome": outcome,
                    "count": count,
                    "start": slot.start.strftime("%H:%M"),
                }
            )
    totals = {o: sum(s.ended.get(o, 0) for s in slots) for o in OUTCOMES}
    return {"bars": bars, "most": most, "totals": totals, "width": width, "height": height}


@blueprint.get("/dashboard")
def dashboard() -> ResponseReturnValue:
    """The state of this prodinf, live."""
    rt = runtime()
    report = status_report(rt, count_limit=COUNT_LIMIT)  # no full count of a big store
    now = utcnow()
    slots = ended_by_slot(rt.store, now, span=SPAN, slots=SLOTS)
    stages = unfinished(rt.store, handover_kind=HANDOVER_KIND).stages
    return render_template(
        "dashboard.html",
        report=report,
        running=running_steps(rt.store),
        chart=chart(slots),
        first=slots[0].start.strftime("%H:%M") if slots else "",
        stages=stages,
        waited=human_duration,
        counted=counted,
        refresh=REFRESH_SECONDS,
    )
