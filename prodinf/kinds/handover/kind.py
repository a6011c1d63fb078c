"""The ``handover`` kind: a database handed over to staging, stage by stage.

Its steps are its stages (by default ``healthcheck``, ``copy``, ``metadata``,
``events``; :data:`prodinf.kinds.handover.config.STAGES`), all on the ``handover``
queue. Each stage runs its service's job and waits for it holding no worker: a kind of
this prodinf as a child job (whose end wakes the stage at once), or, when the stage
names a ``service``, a ``remote_job`` on another prodinf or an HTTP job service. The
stage ends as its job does: a job that fails fails the handover at that stage, with
the job's error (a healthcheck's failed checks) in its details.

``copy`` first takes one of its staging server's copy slots
(``PRODINF_HANDOVER_MAX_COPIES``), waiting holding no worker, in submission order,
until one frees (a handover freeing one wakes the next); it replaces an earlier copy
of the database. If a later stage fails for good, its revert drops the staging copy.
``events`` links the events the registration recorded (recording those a remote
registration reported).

A restart from a stage starts its job afresh as ``<stage>~<round>``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from prodinf import Child, Commit, Flow, Retry, Step, StepContext, job_kind
from prodinf.databases.uri import DatabaseURI, DatabaseUriField
from prodinf.engine.registry import registry
from prodinf.exceptions import PermanentError
from prodinf.kinds.event_record import recorded_with_step
from prodinf.kinds.handover.config import STAGE_KINDS, StagingRule
from prodinf.kinds.subscriptions import REMOTE_KIND
from prodinf.redact import redact, redact_text
from prodinf.remote.services import load_services
from prodinf.status import TERMINAL, JobStatus
from prodinf.store.children import ChildJob, wake_step
from prodinf.store.handovers import free_copy_slot, take_copy_slot
from prodinf.store.types import utcnow

__all__ = ["HANDOVER_KIND", "HandoverParams", "StageSpec", "stage_round"]

HANDOVER_KIND = "handover"
#: Seconds between looks for a free copy slot, besides being woken when one frees.
SLOT_LOOK = 15.0
#: The longest a stage waits for its job before looking at it again.
STAGE_WAIT = 86400.0
_STAGE_RETRY = Retry(attempts=10, backoff=2.0, max_backoff=120.0)


class StageSpec(BaseModel):
    """One stage as the handover was submitted: its name and where it runs."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["healthcheck", "copy", "metadata", "events"]
    service: str | None = None
    kind: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class HandoverParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    src_uri: DatabaseUriField = Field(description="The database handed over.")
    database: str
    dataset: str
    type: str
    release: int
    assembly: str | None = None
    staging: StagingRule = Field(description="Where it is staged (credentials: environment).")
    contact: str = Field(description="Who hears how it ended.")
    comment: str = Field(default="", max_length=10_000)
    stages: list[StageSpec]
    bulk_id: str | None = None


def staging_uri(params: HandoverParams) -> DatabaseURI:
    """Where this handover stages its database, credentials from the environment."""
    return params.staging.target(params.database)


def stage_round(name: str, children: dict[str, ChildJob]) -> int:
    """The round of the newest job ``name`` started: ``copy`` is 1, ``copy~2`` is 2."""
    rounds = [int(n.partition("~")[2] or 1) for n in children if n.partition("~")[0] == name]
    return max(rounds, default=0)


def _spec(ctx: StepContext[HandoverParams]) -> StageSpec:
    return next(s for s in ctx.params.stages if s.name == ctx.step)


def _job_params(ctx: StepContext[HandoverParams], spec: StageSpec) -> dict[str, Any]:
    """The params of the stage's job: the database, and what the configuration adds."""
    p = ctx.params
    staged = any(s.name == "copy" for s in p.stages)
    target = staging_uri(p).secret() if staged else p.src_uri
    if spec.name == "healthcheck":
        own: dict[str, Any] = {"database_uri": p.src_uri}
    elif spec.name == "copy":
        own = {"src_uri": p.src_uri, "tgt_uri": target, "overwrite": True}
    elif spec.name == "metadata":
        comment = f"{p.comment} (contact: {p.contact})" if p.comment else f"contact: {p.contact}"
        own = {
            "database_uri": target,
            "release": p.release,
            "source": "handover",
            "comment": comment,
        }
    else:
        own = {"registration": ctx.outputs.get("metadata", {}).get("result")}
    return {**own, **spec.params}


def _child(ctx: StepContext[HandoverParams], spec: StageSpec, name: str) -> Child:
    params = _job_params(ctx, spec)
    if spec.service is None:
        return Child(name, STAGE_KINDS[spec.name], params)
    service = load_services(ctx.settings.services).by_name.get(spec.service)
    if service is None:
        raise PermanentError(f"stage {spec.name}: no service {spec.service!r} in PRODINF_SERVICES")
    kind = (spec.kind or STAGE_KINDS.get(spec.name)) if service.type == "prodinf" else None
    remote = {"service": spec.service, "kind": kind, "params": params}
    return Child(name, REMOTE_KIND, remote, ctx.settings.queue_handover)


def _stage(ctx: StepContext[HandoverParams]) -> Any:
    """Start the stage's job (the copy once it has a slot), wait for it, end as it ends."""
    spec = _spec(ctx)
    if spec.name == "events" and spec.service is None:
        return _link_events(ctx)
    children = ctx.children()
    this = int(ctx.state.get("round") or stage_round(spec.name, children) + 1)
    name = spec.name if this == 1 else f"{spec.name}~{this}"
    child = children.get(name)
    if child is None and spec.name == "copy" and "slot" not in ctx.state:
        cap = ctx.settings.handover_max_copies
        with ctx.transaction() as conn:
            granted, copying, ahead = take_copy_slot(conn, ctx.job_id, cap, utcnow())
        if not granted:
            return ctx.wait(
                SLOT_LOOK,
                f"waiting for a copy slot on {ctx.params.staging.name}: {copying} of {cap} "
                f"copying, {ahead} waiting before it",
                round=this,
            )
        ctx.record("slot", True)
    if child is None or child.status not in TERMINAL:
        where = spec.service or "here"
        return ctx.start(
            [_child(ctx, spec, name)],
            f"{spec.name}: {STAGE_KINDS.get(spec.name, spec.name)} job on {where}",
            timeout=STAGE_WAIT,
            round=this,
        )
    return _ended(ctx, spec, child)


def _ended(ctx: StepContext[HandoverParams], spec: StageSpec, child: ChildJob) -> Any:
    if child.status != JobStatus.SUCCEEDED:
        if spec.name == "copy":
            _free_slot(ctx)
        error = redact(child.error or {})
        said = error.get("message") or child.status
        raise PermanentError(
            f"{spec.name} {child.status}: {said}",
            stage=spec.name,
            job=child.id,
            job_status=child.status,
            error=error,
        )
    output = {
        "job": child.id,
        "kind": child.kind,
        "service": spec.service,
        "result": _kept(spec.name, redact(child.result)),
    }
    if spec.name == "copy":
        output["target"] = staging_uri(ctx.params).masked()
        cap = ctx.settings.handover_max_copies

        def wake(conn: Connection, _now: Any) -> list[tuple[str, str]]:
            return [(token, "copy") for token in free_copy_slot(conn, ctx.job_id, cap)]

        return Commit(output, lambda _conn, _now: [], wake)
    return output


def _free_slot(ctx: StepContext[HandoverParams]) -> None:
    """A copy that failed frees its slot now; the next handover in line is due at once
    (the reconciler sends it), not at its next look."""
    now = utcnow()
    with ctx.transaction() as conn:
        for token in free_copy_slot(conn, ctx.job_id, ctx.settings.handover_max_copies):
            wake_step(conn, token, "copy", now, now)


def _kept(stage: str, result: Any) -> Any:
    """What a stage keeps of its job's result (the job itself keeps all of it)."""
    if not isinstance(result, dict):
        return result
    if stage == "healthcheck":
        return {k: result.get(k) for k in ("passed", "summary", "database_name")}
    if stage == "copy":
        return {k: v for k, v in result.items() if k != "tables"}
    if stage == "metadata":
        keep = ("registration_id", "dataset", "type", "release", "total_rows", "events")
        return {k: result.get(k) for k in keep}
    return result


def _link_events(ctx: StepContext[HandoverParams]) -> Any:
    """The events the registration recorded; those a remote registration reported
    without an id are recorded here, with this step's success."""
    registration = (ctx.outputs.get("metadata") or {}).get("result") or {}
    found = registration.get("events") or []
    linked = [e for e in found if isinstance(e, dict) and e.get("event_id")]
    missing = [e for e in found if isinstance(e, dict) and not e.get("event_id")]
    if not missing:
        return {"events": [_link(e) for e in linked]}
    target = staging_uri(ctx.params)
    full = target.secret()
    documents = [
        {
            "type": str(event.get("type")),
            "dataset": ctx.params.database,
            "payload": {
                **{k: v for k, v in event.items() if k not in ("type", "dataset")},
                "database_uri": full,
                "server_uri": full.rpartition("/")[0],
                "release": ctx.params.release,
            },
            "source": f"handover {ctx.job_id}",
            "idempotency_key": f"{ctx.job_id}/{ctx.step}/{index}",
        }
        for index, event in enumerate(missing, 1)
    ]
    ids, write = recorded_with_step(ctx.registry or registry, ctx.settings, documents)
    recorded = [{**e, "event_id": i} for e, i in zip(missing, ids, strict=True)]
    return Commit({"events": [_link(e) for e in (*linked, *recorded)]}, write)


def _link(event: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": event["event_id"], "type": event.get("type")}


def _drop_copy(ctx: StepContext[HandoverParams]) -> None:
    """Revert of ``copy``: drop the staging copy this handover made."""
    target = staging_uri(ctx.params).allowed(ctx.settings, "staging")
    ctx.progress(f"dropping the staging copy {redact_text(target.masked())}")
    target.drop()


def _flow(params: HandoverParams) -> Flow:
    steps = []
    for spec in params.stages:
        steps.append(
            Step(
                spec.name,
                _stage,
                revert=_drop_copy if spec.name == "copy" else None,
                retry=_STAGE_RETRY,
                description=f"the {spec.name} stage",
            )
        )
    return Flow(steps)


@job_kind(
    HANDOVER_KIND,
    queue="handover",
    params=HandoverParams,
    submitted_at="POST /api/v1/handovers",
)
def handover(params: HandoverParams) -> Flow:
    """Hand a database over to staging: healthcheck, copy, metadata, events (submit it
    with POST /api/v1/handovers, which checks it first)."""
    return _flow(params)
