"""``register_metadata``: record a dataset's metadata and say what changed.

Two steps:

``measure``
    Reads, in the database, what a registration records: rows and a checksum per
    table (``prodinf.databases.checksum``, portable across engines so a copy on
    another engine compares equal), the ``meta`` table's keys, the size on disk.
    Read only, so it can run any number of times.
``register``
    Writes one registration row for the job (the row's unique ``job_id`` makes a
    step that runs again find it instead of writing another) and returns the
    events it implies against the dataset's previous registration.

The dataset (name and type) and the release come from the naming rules; a name
no rule matches fails the job (the ``release`` param can only override the release).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy import Connection, NullPool, inspect, text

from prodinf import Commit, Flow, Retry, Step, StepContext, job_kind
from prodinf.databases.checksum import table_stats
from prodinf.databases.naming import load_naming_rules
from prodinf.databases.uri import DatabaseURI, DatabaseUriField, database_errors
from prodinf.engine.registry import registry
from prodinf.exceptions import PermanentError, ValidationError
from prodinf.kinds.database.checks.context import json_value
from prodinf.kinds.database.events import Snapshot, events_between, load_event_rules
from prodinf.kinds.event_record import recorded_with_step
from prodinf.redact import redact_text
from prodinf.store.registrations import MetadataStore, Registration

__all__ = ["MAX_META_ROWS", "RegisterMetadataParams", "event_key"]

#: What an event found by a registration says that its own fields already carry.
_NOT_PAYLOAD = ("type", "dataset", "dataset_type", "database")
#: A ``meta`` table larger than this is not a key/value table of settings: refuse it.
MAX_META_ROWS = 100_000
#: The step that registers, and records the events the registration implies.
REGISTER_STEP = "register"


def event_key(job_id: str, index: int) -> str:
    """The idempotency key of the ``index``-th (from 1) event the registration of job
    ``job_id`` recorded: how a registration's events are found again."""
    return f"{job_id}/{REGISTER_STEP}/{index}"


class RegisterMetadataParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database_uri: DatabaseUriField = Field(
        description="The database to register: mysql://user:pass@host/db, postgresql://..., "
        "sqlite:///path."
    )
    release: int | None = Field(
        default=None, ge=0, description="The release (default: from the naming rules)."
    )
    source: str | None = Field(
        default=None, max_length=500, description="Where the dataset came from (free text)."
    )
    comment: str | None = Field(default=None, max_length=10_000, description="A note to keep.")

    @field_validator("database_uri")
    @classmethod
    def _named(cls, value: str, info: ValidationInfo) -> str:
        """At submission, a database no naming rule matches is refused (its registration
        could not say what dataset it is)."""
        settings = (info.context or {}).get("settings")
        if settings is None:  # a job that runs: its step parses the name again
            return value
        database = DatabaseURI.parse(value, field="params.database_uri").database
        try:
            load_naming_rules(settings.naming_rules).parse(database)
        except ValidationError as exc:
            raise ValueError(
                f"{exc.message}: rename the database, or add a rule (PRODINF_NAMING_RULES)"
            ) from None
        return value


def _measure(ctx: StepContext[RegisterMetadataParams]) -> dict[str, Any]:
    params = ctx.params
    uri = DatabaseURI.parse(params.database_uri, field="params.database_uri")
    uri.allowed(ctx.settings, "params.database_uri")  # again: the file may have changed
    try:
        name = load_naming_rules(ctx.settings.naming_rules).parse(uri.database)
    except ValidationError as exc:
        raise ValidationError(exc.message, field="params.database_uri") from None
    if uri.engine_name == "sqlite" and not uri.path.is_file():
        raise PermanentError(f"{uri.masked()}: no such database file")
    ctx.progress(f"measuring {uri.database}")
    engine = uri.create_engine(poolclass=NullPool)
    try:
        with database_errors(uri, "register_metadata of"):
            stats = table_stats(engine, portable=True)
            with engine.connect() as conn:
                meta = _meta(conn)
                size = _size(conn, uri)
    finally:
        engine.dispose()
    tables = {table: s.to_dict() for table, s in stats.items()}
    return {
        "dataset": name.dataset,
        "type": name.type,
        "release": params.release if params.release is not None else name.release,
        "assembly": name.assembly,
        "database_uri": uri.masked(),
        "database_name": uri.database,
        "engine": uri.engine_name,
        "size_bytes": size,
        "total_rows": sum(s.rows for s in stats.values()),
        "tables": tables,
        "meta": meta,
    }


def _meta(conn: Connection) -> dict[str, Any]:
    """The ``meta`` table as ``{key: value}`` (a list when a key has several values)."""
    if "meta" not in inspect(conn).get_table_names():
        return {}
    rows = conn.execute(
        text(f"SELECT meta_key, meta_value FROM meta ORDER BY meta_id LIMIT {MAX_META_ROWS + 1}")
    ).all()
    if len(rows) > MAX_META_ROWS:
        raise PermanentError(f"the meta table has more than {MAX_META_ROWS} rows")
    values: dict[str, list[Any]] = {}
    for key, value in rows:
        values.setdefault(str(key), []).append(json_value(value))
    return {
        key: found[0] if len(found) == 1 else sorted(map(str, found))
        for key, found in values.items()
    }


def _size(conn: Connection, uri: DatabaseURI) -> int | None:
    """Bytes the database takes on disk, as the server reports it."""
    if uri.engine_name == "sqlite":
        return uri.path.stat().st_size
    if uri.engine_name == "postgresql":
        return int(conn.scalar(text("SELECT pg_database_size(current_database())")) or 0)
    if uri.engine_name == "mysql":
        found = conn.scalar(
            text(
                "SELECT COALESCE(SUM(data_length + index_length), 0) "
                "FROM information_schema.TABLES WHERE table_schema = DATABASE()"
            )
        )
        return int(found or 0)
    return None


def _register(ctx: StepContext[RegisterMetadataParams]) -> Commit:
    params = ctx.params
    measured: dict[str, Any] = dict(ctx.outputs["measure"])
    dataset, dataset_type = measured.pop("dataset"), measured.pop("type")
    rules = load_event_rules(ctx.settings.event_rules)
    current = Snapshot(measured["release"], measured["tables"], measured["meta"])

    def events(previous: Registration | None) -> list[dict[str, Any]]:
        found = events_between(_snapshot(previous) if previous else None, current, rules)
        for event in found:
            event.update(
                dataset=dataset,
                dataset_type=dataset_type,
                release=measured["release"],
                database=measured["database_uri"],
            )
            if previous is not None:
                event["previous_registration"] = previous.id
        return found

    values = {
        **measured,
        "source": redact_text(params.source) if params.source else None,
        "comment": redact_text(params.comment) if params.comment else None,
    }
    ctx.progress(f"registering {dataset} ({dataset_type})")
    store = MetadataStore(ctx.settings)
    try:
        registration, new = store.register(
            job_id=ctx.job_id,
            dataset=dataset,
            dataset_type=dataset_type,
            values=values,
            events=events,
        )
    finally:
        store.dispose()
    shown = registration.to_dict()
    output = {
        "registration_id": registration.id,
        "registered_now": new,
        "dataset": registration.dataset,
        "type": registration.type,
        "release": shown["release"],
        "assembly": shown["assembly"],
        "database": shown["database_uri"],
        "size_bytes": shown["size_bytes"],
        "total_rows": shown["total_rows"],
        "tables": shown["tables"],
        "events": shown["events"],
        "registered_at": shown["registered_at"],
    }
    return _with_events(ctx, output, registration.id)


def _with_events(
    ctx: StepContext[RegisterMetadataParams], output: dict[str, Any], registration: int
) -> Commit:
    """The step's output, with its events recorded (each handled by an ``event`` job) in
    the transaction that finishes the step, and named in the output."""
    uri = DatabaseURI.parse(ctx.params.database_uri, field="params.database_uri")
    full = uri.secret()
    documents = [
        {
            "type": found["type"],
            "dataset": uri.database,
            "payload": {
                **{k: v for k, v in found.items() if k not in _NOT_PAYLOAD},
                "database_uri": full,
                "server_uri": full.rpartition("/")[0],
                "release": output["release"],
                "registration_id": registration,
            },
            "source": f"job {ctx.job_id}",
            "idempotency_key": event_key(ctx.job_id, index),
        }
        for index, found in enumerate(output["events"], 1)
    ]
    ids, write = recorded_with_step(ctx.registry or registry, ctx.settings, documents)
    output["events"] = [
        {**found, "event_id": event_id}
        for found, event_id in zip(output["events"], ids, strict=True)
    ]
    return Commit(output, write)


@job_kind("register_metadata", queue="jobs", params=RegisterMetadataParams)
def register_metadata(params: RegisterMetadataParams) -> Flow:
    """Record a dataset's metadata (rows, checksums, meta keys) and the events it implies."""
    return Flow.of(
        Step("measure", _measure, retry=Retry(attempts=3, backoff=2.0)),
        Step(REGISTER_STEP, _register, retry=Retry(attempts=5, backoff=2.0)),
    )


def _snapshot(registration: Registration) -> Snapshot:
    """What a registration recorded that events compare."""
    values = registration.values
    return Snapshot(values["release"], values["tables"], values["meta"])
