"""``healthcheck``: run a selection of the healthcheck catalogue on one database.

The job **succeeds** when every selected check passed, and **fails** with a
``HealthchecksFailed`` error when any found a problem: a handover polling
``GET /api/v1/jobs/<id>`` stops on ``status`` alone, and the error's ``details``
hold the whole result (every check, its count and examples, and the report), so
nobody has to read a succeeded job's result to learn that the data is bad. A
database that cannot be reached or refuses the credentials fails the job too, with
a plain error (no ``details``). ``retry`` runs every check again (after a fix).

Each check's finding is recorded as it completes (``ctx.once``), so a worker that
dies mid-run hands the rest to another without repeating the finished checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import NullPool
from sqlalchemy.exc import DBAPIError

from prodinf import Flow, Retry, Step, StepContext, choices, job_kind
from prodinf.config import Settings, get_settings
from prodinf.databases.naming import DatasetName, load_naming_rules
from prodinf.databases.uri import DatabaseURI, DatabaseUriField, database_errors
from prodinf.exceptions import PermanentError, ProdinfError, TransientError
from prodinf.kinds.database.checks import (
    Catalogue,
    CheckContext,
    CheckSpec,
    Finding,
    load_catalogue,
    render_report,
)
from prodinf.redact import redact_text

__all__ = [
    "HealthcheckParams",
    "HealthchecksFailed",
    "active_catalogue",
    "run_check",
    "run_healthchecks",
]


class HealthchecksFailed(PermanentError):
    """Raised when at least one healthcheck found a problem; ``details`` is the result."""


def active_catalogue(settings: Settings) -> Catalogue:
    """The configured YAML catalogue plus every Python check plugins registered."""
    return load_catalogue(settings.healthchecks).with_python_checks()


def _known(kind: str, values: list[str]) -> list[str]:
    # Checked at submission against this process's catalogue, so a typo is a 400
    # naming the field; the worker checks again against its own.
    catalogue = active_catalogue(get_settings())
    try:
        catalogue.select(**{kind: values})
    except ProdinfError as exc:
        raise ValueError(exc.message.split(": ", 1)[-1]) from None
    return values


def _group_choices() -> list[tuple[str, str]]:
    checks = active_catalogue(get_settings()).checks
    return [
        (group, f"{group}: {', '.join(c.name for c in checks if c.group == group)}")
        for group in sorted({c.group for c in checks})
    ]


def _check_choices() -> list[tuple[str, str, str]]:
    return [
        (c.name, f"{c.name} ({c.group})", c.description)
        for c in active_catalogue(get_settings()).checks
    ]


class HealthcheckParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database_uri: DatabaseUriField = Field(
        description="The database to check: mysql://user:pass@host/db, postgresql://..., "
        "sqlite:///path."
    )
    groups: list[str] = Field(
        default_factory=list,
        max_length=500,
        title="Groups of checks",
        description="Groups of checks to run. With no group and no check picked, every check runs.",
        json_schema_extra=choices(_group_choices),
    )
    names: list[str] = Field(
        default_factory=list,
        max_length=500,
        title="Checks",
        description="Checks to run by name, besides any groups.",
        json_schema_extra=choices(_check_choices),
    )

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        return _known("groups", value)

    @field_validator("names")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return _known("names", value)


def run_check(ctx: CheckContext, spec: CheckSpec) -> dict[str, Any]:
    """Run one check; a query it gets wrong fails the check, a lost connection is raised."""
    started = time.monotonic()
    try:
        finding = spec.run(ctx)
    except TransientError:
        raise
    except DBAPIError as exc:
        ctx.conn.rollback()
        if exc.connection_invalidated:
            raise
        finding = Finding(1, [], f"could not run: {type(exc.orig).__name__}: {exc.orig}")
        finding.passed = False
    except Exception as exc:  # a plugin check's bug fails that check, not the whole run
        ctx.conn.rollback()
        finding = Finding(1, [], f"could not run: {type(exc).__name__}: {exc}")
        finding.passed = False
    else:
        ctx.conn.rollback()  # read only: end the transaction, release any snapshot
    return {
        "name": spec.name,
        "group": spec.group,
        "description": spec.description,
        "passed": finding.ok,
        "count": finding.count,
        "examples": finding.examples,
        "message": redact_text(finding.message)[:2000],
        "seconds": round(time.monotonic() - started, 3),
    }


def run_healthchecks(
    uri: DatabaseURI | str,
    settings: Settings,
    *,
    groups: Iterable[str] = (),
    names: Iterable[str] = (),
    record: Callable[[str, Callable[[], Any]], Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the selected checks on a database; the result (see docs/kinds.rst).

    The job's step calls this with ``record=ctx.once`` (each finding kept as it
    completes) and ``progress=ctx.progress``; a script or a benchmark calls it plainly.

    :raises ValidationError: an unknown group or name.
    :raises PermanentError: bad credentials, no such database.
    :raises RemoteUnavailable: the server does not answer.
    """
    uri = DatabaseURI.of(uri)
    remember = record or (lambda _key, effect: effect())
    selected = active_catalogue(settings).select(list(groups), list(names))
    dataset = load_naming_rules(settings.naming_rules).match(uri.database)
    if uri.engine_name == "sqlite" and not uri.path.is_file():
        raise PermanentError(f"{uri.masked()}: no such database file")
    uri.check_sqlite_file()  # a text file is refused, never opened as SQLite
    started = float(remember("started", time.time))
    checks: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    to_run: list[CheckSpec] = []
    for spec in selected:
        reason = spec.skip_reason(dataset.type if dataset else None, uri.engine_name)
        if reason:
            skipped.append({"name": spec.name, "group": spec.group, "reason": reason})
        else:
            to_run.append(spec)
    if not to_run:
        # Passing on nothing checked would let a handover go on unchecked.
        why = "; ".join(f"{s['name']}: {s['reason']}" for s in skipped[:5])
        raise PermanentError(f"none of the selected checks applies to {uri.database} ({why})")
    engine = uri.create_engine(poolclass=NullPool)
    try:
        with database_errors(uri, "healthcheck of"), engine.connect() as conn:
            check_ctx = CheckContext(
                conn, engine_name=uri.engine_name, database=uri.database, dataset=dataset
            )
            for number, spec in enumerate(to_run, 1):
                if progress is not None:
                    progress(f"check {number} of {len(to_run)}: {spec.name}")
                checks.append(remember(f"check:{spec.name}", partial(run_check, check_ctx, spec)))
    finally:
        engine.dispose()
    return _result(uri, dataset, checks, skipped, time.time() - started)


def _check(ctx: StepContext[HealthcheckParams]) -> dict[str, Any]:
    params = ctx.params
    return run_healthchecks(
        DatabaseURI.parse(params.database_uri, field="params.database_uri").allowed(
            ctx.settings, "params.database_uri"
        ),
        ctx.settings,
        groups=params.groups,
        names=params.names,
        record=ctx.once,
        progress=ctx.progress,
    )


def _result(
    uri: DatabaseURI,
    dataset: DatasetName | None,
    checks: list[dict[str, Any]],
    skipped: list[dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    failed = sum(1 for c in checks if not c["passed"])
    result: dict[str, Any] = {
        "database": uri.masked(),
        "database_name": uri.database,
        "engine": uri.engine_name,
        "dataset": dataset.as_dict() if dataset else None,
        "passed": failed == 0,
        "summary": {
            "run": len(checks),
            "passed": len(checks) - failed,
            "failed": failed,
            "skipped": len(skipped),
            "seconds": round(seconds, 3),
        },
        "checks": checks,
        "skipped": skipped,
    }
    result["report"] = render_report(result)
    return result


def _verdict(ctx: StepContext[HealthcheckParams]) -> dict[str, Any]:
    result: dict[str, Any] = _check(ctx)
    if not result["passed"]:
        raise HealthchecksFailed(result["report"]["subject"], **result)
    return result


@job_kind("healthcheck", queue="jobs", params=HealthcheckParams)
def healthcheck(params: HealthcheckParams) -> Flow:
    """Run healthchecks on a database; fails, with the report, if any check finds a problem."""
    return Flow.of(Step("check", _verdict, retry=Retry(attempts=3, backoff=2.0)))
