"""Handing databases over: submit (checked in the request; the store refuses a second
unfinished handover of a database), bulk, stop, restart, and what a server holds.
The API, the web pages and the CLI all call :class:`Handovers`."""

from __future__ import annotations

import fnmatch
import uuid
from typing import Any

from sqlalchemy import NullPool, text
from sqlalchemy.exc import IntegrityError, OperationalError

from prodinf.config import Settings
from prodinf.databases.naming import load_naming_rules
from prodinf.databases.uri import DatabaseURI, database_errors
from prodinf.engine.messages import Messages, Publish, lane
from prodinf.engine.newjob import new_job
from prodinf.engine.registry import Registry
from prodinf.engine.service import Jobs
from prodinf.exceptions import BrokerUnavailable, Conflict, NotFound, ProdinfError, ValidationError
from prodinf.kinds.handover.checks import Checked, check_fields, check_handover, server_key
from prodinf.kinds.handover.config import STAGES
from prodinf.kinds.handover.kind import HANDOVER_KIND
from prodinf.kinds.handover.report import handover_status
from prodinf.redact import redact_text
from prodinf.status import TERMINAL
from prodinf.store import JobStore
from prodinf.store.children import wake_step
from prodinf.store.handovers import (
    Unfinished,
    claim_source,
    free_copy_slot,
    get_handover,
    in_flight,
    insert_bulk,
    insert_handover,
    key_of,
    reset_copy,
)
from prodinf.store.rows import JobRows
from prodinf.store.submissions import delete_job
from prodinf.store.types import utcnow

__all__ = ["MAX_BULK", "Handovers"]

#: Most databases one bulk handover takes.
MAX_BULK = 500
#: Tries of a submission whose transaction lost a race it can retry (a deadlock).
_TRIES = 5


class Handovers:
    """The operations on handovers; each writes one transaction, then sends messages."""

    def __init__(
        self, store: JobStore, registry: Registry, settings: Settings, publish: Publish
    ) -> None:
        self.store, self.registry, self.settings = store, registry, settings
        self.messages = Messages(store, publish, settings)
        self.jobs = Jobs(store, registry, settings, publish)

    def submit(
        self, raw: Any, *, submitted_by: str | None = None, bulk_id: str | None = None
    ) -> dict[str, Any]:
        """Check and record a handover, send its job: ``{token, status, ...}``.

        :raises ValidationError: a check failed (the field named).
        :raises Conflict: the database has an unfinished handover (``details``: its
            ``token`` and ``stage``).
        """
        checked = check_handover(raw, self.settings, utcnow())
        return self._record(checked, submitted_by=submitted_by, bulk_id=bulk_id)

    def _record(
        self, checked: Checked, *, submitted_by: str | None, bulk_id: str | None
    ) -> dict[str, Any]:
        kind = self.registry.get(HANDOVER_KIND)
        name = checked.name
        params = kind.validate(
            {
                "src_uri": checked.uri.secret(),
                "database": name.database,
                "dataset": name.dataset,
                "type": name.type,
                "release": name.release,
                "assembly": name.assembly,
                "staging": checked.staging.model_dump(),
                "contact": checked.contact,
                "comment": checked.comment,
                "stages": checked.stages,
                "bulk_id": bulk_id,
            }
        )
        now = utcnow()
        notify: dict[str, Any] = {"email": [checked.contact]}
        if checked.notify == "failure":
            notify["when"] = "failure"
        job = new_job(
            kind,
            params.model_dump(mode="json"),
            kind.flow(params),
            self.settings,
            now,
            submitted_by=submitted_by or checked.contact,
            notify=notify,
        )
        source = key_of(server_key(checked.uri), name.database)
        row = {
            "token": job.id,
            "source_key": source,
            "server": redact_text(server_key(checked.uri)),
            "database": name.database,
            "dataset": name.dataset,
            "type": name.type,
            "release": name.release,
            "staging": checked.staging.name,
            "staging_key": key_of(checked.staging.server),
            "contact": checked.contact,
            "bulk_id": bulk_id,
            "created_at": now,
            "copy_state": None,
            "copy_asked_at": None,
        }
        for attempt in range(1, _TRIES + 1):
            try:
                with self.store.transaction() as conn:
                    claim_source(conn, source, job.id)
                    job.insert(conn)
                    insert_handover(conn, row)
                break
            except Unfinished as exc:
                raise Conflict(
                    f"{name.database} has an unfinished handover ({exc.token}, at "
                    f"{exc.stage or 'its start'}): stop it, or wait for it to end",
                    field="src_uri",
                    token=exc.token,
                    stage=exc.stage,
                ) from None
            except (IntegrityError, OperationalError, ProdinfError):
                # a deadlock or a lost insert race on MariaDB/PostgreSQL: try again
                if attempt == _TRIES:
                    raise
        try:
            self.messages.send(job.id, job.queue, job.next_run_at)
        except BrokerUnavailable:
            delete_job(self.store, job.id)  # the handover row goes with it (see below)
            raise
        return {"token": job.id, "database": name.database, "status": job.values["status"]}

    def bulk(self, raw: Any, *, submitted_by: str | None = None) -> dict[str, Any]:
        """Hand over many databases of one server: each answered with its token or why
        it was refused. ``{id, answers: [{database, token} | {database, error, field}]}``."""
        if not isinstance(raw, dict):
            raise ValidationError("send a JSON object with server_uri and databases", field=None)
        server = raw.get("server_uri")
        if not isinstance(server, str) or not server.strip():
            raise ValidationError(
                "server_uri is required: the server to hand over from", field="server_uri"
            )
        names = self._selection(raw, server)
        common = {k: raw.get(k) for k in ("contact", "comment", "notify") if k in raw}
        check_fields({"src_uri": server, **common})  # refuse a bad contact once, not N times
        bulk_id = str(uuid.uuid4())
        answers: list[dict[str, Any]] = []
        for name in names:
            uri = parse_server(server).with_database(name)
            try:
                made = self.submit(
                    {"src_uri": uri.secret(), **common},
                    submitted_by=submitted_by,
                    bulk_id=bulk_id,
                )
                answers.append({"database": name, "token": made["token"]})
            except ProdinfError as exc:
                refused = {"database": name, "error": exc.message, "field": exc.field}
                if exc.details.get("token"):
                    refused["token"] = exc.details["token"]
                answers.append(refused)
        shown_server = redact_text(server.strip())
        with self.store.transaction() as conn:
            insert_bulk(
                conn,
                {
                    "id": bulk_id,
                    "server": shown_server,
                    "contact": str(common.get("contact", "")),
                    "comment": common.get("comment"),
                    "answers": answers,
                    "created_at": utcnow(),
                },
            )
        return {"id": bulk_id, "server_uri": shown_server, "answers": answers}

    def _selection(self, raw: dict[str, Any], server: str) -> list[str]:
        names, pattern = raw.get("databases"), raw.get("pattern")
        if (names is None) == (pattern is None):
            raise ValidationError(
                "give databases (a list) or pattern (a glob), not both", field="databases"
            )
        if names is not None:
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                raise ValidationError(
                    "databases must be a list of database names", field="databases"
                )
            chosen = list(dict.fromkeys(names))
        else:
            if not isinstance(pattern, str) or not pattern.strip():
                raise ValidationError(
                    "pattern must be a glob such as *_core_115_*", field="pattern"
                )
            chosen = [
                d["name"]
                for d in self.databases(server)["databases"]
                if fnmatch.fnmatchcase(d["name"], pattern.strip())
            ]
            if not chosen:
                raise ValidationError(
                    f"no database on the server matches {pattern!r}", field="pattern"
                )
        if len(chosen) > MAX_BULK:
            raise ValidationError(f"at most {MAX_BULK} databases at once", field="databases")
        return chosen

    def stop(self, token: str, actor: str | None = None) -> dict[str, Any]:
        """Stop handover ``token``: its job is cancelled, and the stage's job with it."""
        found = self._handover(token)
        try:
            stopped = self.jobs.cancel(token, actor)
        except Conflict:
            status = handover_status(self.store.describe(token)["status"])
            raise Conflict(
                f"the handover of {found['database']} has already ended ({status}); "
                "restart it from a stage to run it again",
                field="token",
            ) from None
        self._free_slot(token)
        return stopped

    def _free_slot(self, token: str) -> None:
        """A stopped handover's copy slot goes to the next one in line at once."""
        now = utcnow()
        woken = []
        with self.store.transaction() as conn:
            for waiting in free_copy_slot(conn, token, self.settings.handover_max_copies):
                queue = wake_step(conn, waiting, "copy", now)
                if queue is not None:
                    woken.append((waiting, lane(queue), None))
        self.messages.send_all(woken)

    def restart(self, token: str, since: Any, actor: str | None = None) -> dict[str, Any]:
        """Run ended handover ``token`` again from stage ``since`` (its earlier stages that
        did not succeed, or were reverted, run again too).

        :raises Conflict: it has not ended, or another handover of its database runs.
        """
        found = self._handover(token)
        if since not in STAGES:
            raise ValidationError(f"from must be one of {', '.join(STAGES)}", field="from")
        with self.store.transaction() as conn:
            rows = JobRows.lock(conn, token, self.settings.resend_after)
            assert rows is not None
            names = [s.name for s in rows.steps]
            if since not in names:
                raise ValidationError(
                    f"this handover has no {since} stage (its stages: {', '.join(names)})",
                    field="from",
                )
            if rows.job.status not in TERMINAL:
                raise Conflict(
                    f"handover {token} is {rows.job.status}: stop it before restarting it",
                    field="token",
                )
            try:
                claim_source(conn, _source_key(found), token)
            except Unfinished as exc:
                raise Conflict(
                    f"{found['database']} has another unfinished handover ({exc.token})",
                    field="token",
                    token=exc.token,
                    stage=exc.stage,
                ) from None
            self.jobs.lifecycle.retry(
                rows, utcnow(), resend_after=self.settings.resend_after, since=since
            )
            rows.by(actor)
            rows.save(conn)
            reset_copy(conn, token)
        self.messages.send(token, rows.job.queue, rows.job.next_run_at)
        return {"token": token, "status": rows.job.status, "from": since}

    def _handover(self, token: str) -> dict[str, Any]:
        found = get_handover(self.store, token) if isinstance(token, str) else None
        if found is None:
            raise NotFound(f"no handover {token!r}", field="token")
        return found

    def databases(self, server_uri: Any) -> dict[str, Any]:
        """The databases on ``server_uri`` that the naming rules read, with their type,
        release and any handover in flight."""
        if not isinstance(server_uri, str) or not server_uri.strip():
            raise ValidationError("server_uri is required", field="server_uri")
        server = parse_server(server_uri)
        refused = server.refusal(self.settings)
        if refused is not None:
            shown = redact_text(server_uri.strip())
            raise ValidationError(f"server_uri: {shown} {refused}", field="server_uri")
        try:
            names = list_databases(server)
        except ProdinfError as exc:
            raise ValidationError(
                f"server_uri: {redact_text(exc.message)}", field="server_uri"
            ) from None
        rules = load_naming_rules(self.settings.naming_rules)
        found = [(n, rules.match(n)) for n in names]
        known = [(n, m) for n, m in found if m is not None]
        key = server_key(server)
        flying = in_flight(self.store, {n: key_of(key, n) for n, _ in known})
        return {
            "server_uri": redact_text(server_uri.strip()),
            "databases": [
                {
                    "name": n,
                    "dataset": m.dataset,
                    "type": m.type,
                    "release": m.release,
                    "assembly": m.assembly,
                    "handover": flying.get(n),
                }
                for n, m in known
            ],
            "unmatched": len(found) - len(known),
        }


def _source_key(found: dict[str, Any]) -> str:
    return str(found["source_key"])


def parse_server(value: str) -> DatabaseURI:
    """A server URI as a ``DatabaseURI`` whose ``with_database`` names its databases:
    ``mysql://user@host:3306``, ``postgresql://user@host``, ``sqlite:///folder``.

    :raises ValidationError: naming ``server_uri``.
    """
    text_ = value.strip().rstrip("/")
    if text_.lower().startswith("sqlite:///"):
        folder = text_[len("sqlite:///") :]
        if folder.endswith(".sqlite"):
            return DatabaseURI.parse(text_, field="server_uri")
        return DatabaseURI.parse(f"sqlite:///{folder}/_.sqlite", field="server_uri")
    try:
        return DatabaseURI.parse(text_, field="server_uri")
    except ValidationError:
        return DatabaseURI.parse(f"{text_}/_", field="server_uri")


def list_databases(server: DatabaseURI) -> list[str]:
    """The names of the databases on ``server``'s server (SQLite: the files in its folder)."""
    if server.engine_name == "sqlite":
        folder = server.path if server.path.is_dir() else server.path.parent
        return sorted(p.stem for p in folder.glob("*.sqlite"))
    query = (
        "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname"
        if server.engine_name == "postgresql"
        else "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME"
    )
    admin = server.server().create_engine(poolclass=NullPool)
    try:
        with database_errors(server, "listing the databases of"), admin.connect() as conn:
            return [str(n) for n in conn.scalars(text(query))]
    finally:
        admin.dispose()
