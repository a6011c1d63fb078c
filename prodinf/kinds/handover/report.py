"""How a handover stands, stage by stage: what its API document, its page, its mail and
the CLI show."""

from __future__ import annotations

from typing import Any

from prodinf.exceptions import NotFound
from prodinf.kinds.handover.kind import stage_round
from prodinf.redact import redact, redact_text
from prodinf.status import HANDOVER_STATUS, HandoverStatus, JobStatus, StepStatus
from prodinf.store import JobStore
from prodinf.store.children import children_of
from prodinf.store.handovers import get_handover

__all__ = ["handover_detail", "handover_status", "stage_name"]


def handover_status(job_status: str) -> HandoverStatus:
    """The handover's status for its job's (see :data:`prodinf.status.HANDOVER_STATUS`)."""
    return HANDOVER_STATUS[JobStatus(job_status)]


def stage_name(child: str) -> str:
    """The stage a child job belongs to: ``copy~2`` is ``copy``."""
    return child.partition("~")[0]


def handover_detail(store: JobStore, token: str) -> dict[str, Any]:
    """Handover ``token``: its facts, status, stages (each with status, start, end, job,
    service and error), failed stage, events and history; credentials masked.

    :raises NotFound: there is no such handover.
    """
    found = get_handover(store, token)
    if found is None:
        raise NotFound(f"no handover {token!r}", field="token")
    job = store.describe(token)
    with store.transaction() as conn:
        children = {s["name"]: children_of(conn, token, s["name"]) for s in job["steps"]}
    stages = []
    for step in job["steps"]:
        mine = children[step["name"]]
        newest = stage_round(step["name"], mine)
        child = mine.get(step["name"] if newest <= 1 else f"{step['name']}~{newest}")
        specs = job["params"].get("stages", [])
        spec: dict[str, Any] = next((s for s in specs if s["name"] == step["name"]), {})
        stages.append(
            {
                "name": step["name"],
                "status": step["status"],
                "started_at": step["started_at"],
                "finished_at": step["finished_at"],
                "waiting_for": step["waiting_for"],
                "service": spec.get("service"),
                "job": (
                    {"id": child.id, "kind": child.kind, "status": child.status}
                    if child is not None
                    else None
                ),
                "error": (step["error"] or {}).get("message") if step["error"] else None,
                "reverted": step["status"] == StepStatus.REVERTED,
            }
        )
    failed = next((s for s in stages if s["status"] == StepStatus.FAILED), None)
    linked = next((s["output"] for s in job["steps"] if s["name"] == "events"), None)
    events = linked.get("events", []) if isinstance(linked, dict) else []
    params = job["params"]
    error = job["error"]
    # job_detail masked the params, outputs and history already; redact() over the
    # whole would also mask the handover's ``token`` (it masks every key named so)
    shown: dict[str, Any] = {
        "token": token,
        "database": found["database"],
        "dataset": found["dataset"],
        "type": found["type"],
        "release": found["release"],
        "assembly": params.get("assembly"),
        "server": found["server"],
        "src_uri": params.get("src_uri"),
        "staging": found["staging"],
        "contact": found["contact"],
        "submitted_by": job["submitted_by"],
        "comment": redact_text(str(params.get("comment") or "")),
        "bulk_id": found["bulk_id"],
        "status": handover_status(job["status"]),
        "job_status": job["status"],
        "stage": failed["name"] if failed else _current(stages),
        "error": (
            {
                "stage": failed["name"] if failed else (error or {}).get("step"),
                "message": (error or {}).get("message"),
                "details": redact((error or {}).get("details")),
            }
            if error
            else None
        ),
        "created_at": found["created_at"],
        "finished_at": found["finished_at"],
        "stages": stages,
        "events": events,
        "history": job["history"],
    }
    return shown


def _current(stages: list[dict[str, Any]]) -> str | None:
    return next((s["name"] for s in stages if s["status"] != StepStatus.SUCCEEDED), None)
