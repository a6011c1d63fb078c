"""The mail that tells a handover's contact how the handover ended.

Rendered from ``templates/handover_report.txt`` and ``templates/handover_report.html``
(autoescaped) from the notification snapshot of the handover's job, whose ``params``
(credentials masked) name the database. Each stage is listed with its outcome, read
from how the job ended: stages before the failed one succeeded, those after it did
not run, and a ``reverted`` job dropped its staging copy. A failed stage's detail is
shown inline: a healthcheck's failed checks with their counts and examples, any other
stage's error message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prodinf.mail.message import one_line
from prodinf.mail.rendering import mail_templates
from prodinf.redact import redact, redact_text
from prodinf.status import HANDOVER_STATUS, HandoverStatus, JobStatus, StepStatus

__all__ = ["render_handover_report"]

#: A handover's own words for how it ended, from its job's status.
_OUTCOMES = {str(job): str(shown) for job, shown in HANDOVER_STATUS.items()}
#: Most failed checks listed; the rest are counted.
MAX_CHECKS = 50
#: Longest an example row or message is shown.
_MAX_TEXT = 500


@dataclass(frozen=True)
class StageLine:
    """One stage as the mail lists it: its name and how it went (``None``: unknown)."""

    name: str
    outcome: str | None
    note: str | None = None


@dataclass(frozen=True)
class FailedCheck:
    """One healthcheck that found a problem: how many rows, and some of them."""

    name: str
    group: str | None
    description: str | None
    message: str
    count: int | None
    examples: list[str]
    more: int


@dataclass(frozen=True)
class Failure:
    """The stage a handover failed at: its job, what it said and, for a healthcheck,
    the failed checks."""

    stage: str | None
    message: str
    job: str | None
    job_status: str | None
    link: str | None
    checks: list[FailedCheck]
    more_checks: int
    summary: dict[str, Any] | None


def render_handover_report(job: dict[str, Any], public_url: str | None) -> tuple[str, str, str]:
    """The subject, text and HTML of the mail reporting a handover's end.

    ``job`` is the notification snapshot of the handover's job (``id, kind, status,
    result, error, ..., params``); ``public_url`` the portal's public address, when
    known, for links to the handover's page and its stage jobs' pages.
    """
    shown: dict[str, Any] = redact(job)
    params = _dict(shown.get("params"))
    status = str(shown.get("status"))
    outcome = _OUTCOMES.get(status, status)
    base = public_url.rstrip("/") if public_url else None
    failure = _failure(shown, base) if outcome == HandoverStatus.FAILED else None
    stages = _stages(params, status, failure, shown.get("result"))
    database = str(params.get("database") or f"job {shown['id']}")
    context = {
        "job": shown,
        "database": database,
        "outcome": outcome,
        "facts": _facts(params, shown),
        "comment": str(params.get("comment") or ""),
        "stages": stages,
        "stages_known": any(s.outcome for s in stages),
        "failure": failure,
        "note": _copy_note(params, status, failure),
        "link": f"{base}/handovers/{shown['id']}" if base else None,
    }
    env = mail_templates()
    text = env.get_template("handover_report.txt").render(context)
    html = env.get_template("handover_report.html").render(context)
    said = outcome
    if failure is not None and failure.stage:
        said = f"failed at {failure.stage}"
    return one_line(f"[prodinf] handover of {database} {said}"), text, html


def _facts(params: dict[str, Any], job: dict[str, Any]) -> list[tuple[str, str]]:
    """The handover's facts as (label, value), those it has."""
    staging = params.get("staging")
    where = None
    if isinstance(staging, dict):
        where = str(staging.get("name") or "")
        if staging.get("server"):
            where = f"{where} ({staging['server']})" if where else str(staging["server"])
    rows = [
        ("Database", params.get("database")),
        ("Dataset", params.get("dataset")),
        ("Type", params.get("type")),
        ("Release", params.get("release")),
        ("Assembly", params.get("assembly")),
        ("Source", params.get("src_uri")),
        ("Staging", where),
        ("Contact", params.get("contact")),
        ("Submitted by", job.get("submitted_by")),
        ("Submitted at", job.get("created_at")),
        ("Finished at", job.get("finished_at")),
        ("Token", job.get("id")),
    ]
    return [(label, str(value)) for label, value in rows if value not in (None, "")]


def _stage_names(params: dict[str, Any]) -> list[str]:
    specs = params.get("stages")
    if not isinstance(specs, list):
        return []
    return [str(s["name"]) for s in specs if isinstance(s, dict) and s.get("name")]


def _stages(
    params: dict[str, Any], status: str, failure: Failure | None, result: Any
) -> list[StageLine]:
    """Each stage with its outcome, as far as the job's end tells it."""
    names = _stage_names(params)
    if status == JobStatus.SUCCEEDED:
        events = _events_note(result)
        done = StepStatus.SUCCEEDED
        return [StageLine(n, done, events if n == "events" else None) for n in names]
    if failure is None or failure.stage not in names:
        return [StageLine(n, None) for n in names]
    at = names.index(failure.stage)
    lines = []
    for index, name in enumerate(names):
        if index < at:
            dropped = name == "copy" and status == JobStatus.REVERTED
            note = "copy dropped" if dropped else None
            lines.append(StageLine(name, StepStatus.SUCCEEDED, note))
        elif index == at:
            lines.append(StageLine(name, StepStatus.FAILED))
        else:
            lines.append(StageLine(name, "not run"))
    return lines


def _events_note(result: Any) -> str | None:
    """The events a succeeded handover dispatched, by type."""
    events = result.get("events") if isinstance(result, dict) else None
    if not isinstance(events, list):
        return None
    if not events:
        return "no events"
    types = sorted({str(e.get("type")) for e in events if isinstance(e, dict)})
    plural = "event" if len(events) == 1 else "events"
    return f"{len(events)} {plural}: {', '.join(types)}" if types else f"{len(events)} {plural}"


def _copy_note(params: dict[str, Any], status: str, failure: Failure | None) -> str | None:
    """What became of the staging copy when a stage after ``copy`` failed."""
    names = _stage_names(params)
    if failure is None or "copy" not in names or failure.stage not in names:
        return None
    if names.index(failure.stage) <= names.index("copy"):
        return None
    staging = params.get("staging")
    where = staging.get("name") if isinstance(staging, dict) else None
    on = f" on {where}" if where else ""
    if status == JobStatus.REVERTED:
        return f"The staging copy{on} was dropped: staging no longer holds this database."
    return f"The staging copy{on} could not be dropped: it is still in place."


def _failure(job: dict[str, Any], base: str | None) -> Failure:
    error = _dict(job.get("error"))
    details = _dict(error.get("details"))
    stage = details.get("stage") or error.get("step")
    own = _dict(details.get("error"))
    message = own.get("message") or error.get("message") or job.get("message") or ""
    found = _dict(own.get("details"))
    failed = [c for c in _list(found.get("checks")) if isinstance(c, dict) and not c.get("passed")]
    summary = _dict(found.get("summary")) or None
    stage_job = details.get("job")
    return Failure(
        stage=str(stage) if stage else None,
        message=_clip(str(message)),
        job=str(stage_job) if stage_job else None,
        job_status=str(details["job_status"]) if details.get("job_status") else None,
        link=f"{base}/jobs/{stage_job}" if base and stage_job else None,
        checks=[_check(c) for c in failed[:MAX_CHECKS]],
        more_checks=max(0, len(failed) - MAX_CHECKS),
        summary=summary,
    )


def _check(check: dict[str, Any]) -> FailedCheck:
    examples = _list(check.get("examples"))
    count = check.get("count")
    known = count if isinstance(count, int) and not isinstance(count, bool) else None
    return FailedCheck(
        name=str(check.get("name") or "?"),
        group=str(check["group"]) if check.get("group") else None,
        description=str(check["description"]) if check.get("description") else None,
        message=_clip(str(check.get("message") or "")),
        count=known,
        examples=[_example(row) for row in examples],
        more=max(0, known - len(examples)) if known is not None else 0,
    )


def _example(row: Any) -> str:
    """An example row as ``column=value, ...`` (``NULL`` for a null)."""
    if isinstance(row, dict):
        shown = ", ".join(f"{k}={'NULL' if v is None else v}" for k, v in row.items())
    else:
        shown = str(row)
    return _clip(redact_text(shown))


def _dict(value: Any) -> dict[str, Any]:
    """``value`` if it is an object, else an empty one: a snapshot may lack any part."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else f"{text[: _MAX_TEXT - 1]}…"
