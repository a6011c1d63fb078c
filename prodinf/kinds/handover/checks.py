"""The checks a handover passes inside the request that submits it, each refusing with
a ``ValidationError`` that names the field and says what to do."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import NullPool, inspect, text
from sqlalchemy.exc import ArgumentError

from prodinf.addresses import validate_address
from prodinf.config import Settings
from prodinf.databases.naming import DatasetName, load_naming_rules
from prodinf.databases.uri import DatabaseURI, database_errors
from prodinf.exceptions import ProdinfError, ValidationError
from prodinf.kinds.handover.config import STAGES, HandoverConfig, StagingRule, load_handover_config
from prodinf.redact import redact_text

__all__ = ["MAX_COMMENT", "NOTIFY", "Checked", "check_handover", "server_key"]

#: Longest comment a handover keeps.
MAX_COMMENT = 10_000
#: When the contact is mailed: at every end, or only when it did not succeed.
NOTIFY = ("always", "failure")


@dataclass(frozen=True)
class Checked:
    """A handover that passed its checks: what it hands over, where, and how."""

    uri: DatabaseURI
    name: DatasetName
    staging: StagingRule
    target: DatabaseURI
    stages: list[dict[str, Any]]
    contact: str
    comment: str
    notify: str


def server_key(uri: DatabaseURI) -> str:
    """The source server of ``uri``, as it is compared (engine, host, port; SQLite:
    the folder)."""
    if uri.engine_name == "sqlite":
        return f"sqlite:{uri.path.resolve().parent}"
    url = uri.url
    return f"{uri.engine_name}://{url.host}:{url.port or ''}"


def check_fields(raw: Any) -> tuple[str, str, str, str]:
    """``src_uri``, ``contact``, ``comment`` and ``notify`` of a submission, checked."""
    if not isinstance(raw, dict):
        raise ValidationError("send a JSON object with src_uri, contact and comment", field=None)
    src = raw.get("src_uri")
    if not isinstance(src, str) or not src.strip():
        raise ValidationError("src_uri is required: the database to hand over", field="src_uri")
    contact = raw.get("contact")
    if not isinstance(contact, str) or not contact.strip():
        raise ValidationError("contact is required: the address told how it ends", field="contact")
    contact = validate_address(contact, field="contact")
    comment = raw.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        raise ValidationError("comment is required: say what this handover is", field="comment")
    if len(comment) > MAX_COMMENT:
        raise ValidationError(f"comment is longer than {MAX_COMMENT} characters", field="comment")
    for name, value in (("src_uri", src), ("comment", comment)):
        _keepable(name, value)
    notify = raw.get("notify", "always")
    if notify not in NOTIFY:
        raise ValidationError(
            f"notify must be one of {', '.join(NOTIFY)} (default always)", field="notify"
        )
    return src.strip(), contact, comment.strip(), str(notify)


def _keepable(field: str, value: str) -> None:
    """Refuse text no store keeps as given (PostgreSQL refuses NUL; a lone surrogate is
    not Unicode), naming the field."""
    if "\x00" in value:
        raise ValidationError(f"{field} has a NUL character", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{field} is not valid Unicode", field=field) from None


def check_handover(raw: Any, settings: Settings, now: datetime) -> Checked:
    """Every check of a handover but the duplicate (which the store decides).

    :raises ValidationError: naming the field, saying what to do.
    """
    src, contact, comment, notify = check_fields(raw)
    uri = DatabaseURI.parse(src, field="src_uri")
    refused = uri.refusal(settings)
    if refused is not None:
        raise ValidationError(f"src_uri: {uri.masked()} {refused}", field="src_uri")
    name = check_name(uri, settings)
    config = load_handover_config(settings.handover_config)
    type_settings = config.type_settings(name.type)
    if type_settings is None:
        raise ValidationError(
            f"{name.type} databases are not handed over: the handover configuration "
            f"({config.source}) has no entry for the type",
            field="src_uri",
        )
    closed = type_settings.accepting.refusal(name.type, now)
    if closed:
        raise ValidationError(closed, field="src_uri")
    if settings.release is not None and name.release != settings.release:
        raise ValidationError(
            f"{uri.database} is named for release {name.release}, but the current release "
            f"is {settings.release} (PRODINF_RELEASE)",
            field="src_uri",
        )
    staging, target = check_target(config, uri, name, settings)
    check_exists(uri)
    check_release(uri, name, config.release_key)
    stages = [
        {"name": stage, **type_settings.stage(stage).model_dump(exclude_none=True)}
        for stage in STAGES
        if stage in type_settings.stages
    ]
    return Checked(uri, name, staging, target, stages, contact, comment, notify)


def check_name(uri: DatabaseURI, settings: Settings) -> DatasetName:
    found = load_naming_rules(settings.naming_rules).match(uri.database)
    if found is None:
        raise ValidationError(
            f"{uri.database!r} matches no naming rule (dataset_type_release_assembly, such "
            "as homo_sapiens_core_115_38): rename it, or add a rule to the naming rules",
            field="src_uri",
        )
    return found


def check_target(
    config: HandoverConfig, uri: DatabaseURI, name: DatasetName, settings: Settings
) -> tuple[StagingRule, DatabaseURI]:
    staging = config.staging_for(name.type, uri.database)
    if staging is not None:
        staging = staging.under(settings.home)
    if staging is None:
        raise ValidationError(
            f"no staging rule of {config.source} takes {name.type} database {uri.database}: "
            "add one",
            field="src_uri",
        )
    try:
        target = staging.target(uri.database)
    except ProdinfError as exc:
        raise ValidationError(f"staging {staging.name}: {exc.message}", field="src_uri") from None
    refused = target.refusal(settings)
    if refused is not None:  # the copy job would be refused: say so now, and what to do
        raise ValidationError(
            f"the staging target of {uri.database} (rule {staging.name}), {target.masked()}, "
            f"{refused}: add its folder or host to the setting",
            field="src_uri",
        )
    if same_database(uri, target):
        raise ValidationError(
            f"the staging target of {uri.database} (rule {staging.name}) is the source "
            "database itself: hand over from the production server, not from staging",
            field="src_uri",
        )
    return staging, target


def same_database(a: DatabaseURI, b: DatabaseURI) -> bool:
    """Whether ``a`` and ``b`` are one database: the same engine, the same file, or the
    same database on the same port of one host, however each names the host
    (``localhost`` is ``127.0.0.1``)."""
    if a.engine_name != b.engine_name:
        return False
    if a.engine_name == "sqlite":
        return a.path.resolve() == b.path.resolve()
    return _place(a) == _place(b)


def _place(uri: DatabaseURI) -> tuple[str, int, str]:
    host = uri.url.host or "localhost"
    try:
        host = socket.gethostbyname(host)
    except OSError:  # unresolvable: compare the names as written
        host = host.lower()
    default = 5432 if uri.engine_name == "postgresql" else 3306
    return host, uri.url.port or default, uri.database


def check_exists(uri: DatabaseURI) -> None:
    try:
        found = uri.exists()
    except ProdinfError as exc:
        raise ValidationError(
            f"src_uri: the server does not answer or refuses the login: {redact_text(exc.message)}",
            field="src_uri",
        ) from None
    if not found:
        raise ValidationError(
            f"src_uri: there is no database {uri.database} on {redact_text(server_key(uri))}",
            field="src_uri",
        )


def check_release(uri: DatabaseURI, name: DatasetName, key: str) -> None:
    """The release the database declares (meta key ``key``) is the one in its name."""
    try:
        engine = uri.create_engine(poolclass=NullPool)
    except ArgumentError as exc:  # e.g. credentials in a SQLite URI
        raise ValidationError(f"src_uri: {exc}", field="src_uri") from None
    try:
        with database_errors(uri, "reading the meta table of"), engine.connect() as conn:
            if "meta" not in inspect(conn).get_table_names():
                declared = None
            else:
                declared = conn.scalar(
                    text("SELECT meta_value FROM meta WHERE meta_key = :k"), {"k": key}
                )
    except ProdinfError as exc:
        raise ValidationError(f"src_uri: {redact_text(exc.message)}", field="src_uri") from None
    finally:
        engine.dispose()
    if declared is None:
        raise ValidationError(
            f"{uri.database} declares no release: its meta table has no {key!r} key",
            field="src_uri",
        )
    if str(declared).strip() != str(name.release):
        raise ValidationError(
            f"{uri.database} declares release {str(declared)[:40]!r} ({key}), but its name "
            f"says {name.release}: fix one of them",
            field="src_uri",
        )
