"""The outbox: where mail goes when no SMTP server is set, one ``.eml`` file per Message-ID.

Files are written atomically (a temporary file, then ``os.replace``), so a reader
sees a whole message or none, and the same Message-ID always lands in the same file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING

from prodinf.exceptions import NotFound
from prodinf.files import private_folder

if TYPE_CHECKING:
    from prodinf.config import Settings

__all__ = [
    "OutboxEntry",
    "OutboxMessage",
    "outbox_dir",
    "outbox_message",
    "outbox_messages",
    "outbox_name",
    "write_outbox",
]

log = logging.getLogger(__name__)

#: Names outbox_name makes: nothing that could climb out of the folder or hide in it.
_NAME = re.compile(r"[A-Za-z0-9_@+=-][A-Za-z0-9._@+=-]{0,199}\.eml")
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")
#: Headers are read from at most this much of a file; a corrupt file can be any size.
_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class OutboxEntry:
    """One message in the outbox, from its headers; ``name`` is its file name and
    ``date`` its Date header in UTC (None when missing or unreadable)."""

    name: str
    message_id: str
    to: str
    subject: str
    date: datetime | None
    size: int


@dataclass(frozen=True)
class OutboxMessage:
    """One message in the outbox, whole: its headers in order and its bodies as text."""

    name: str
    headers: list[tuple[str, str]]
    text: str | None
    html: str | None


def outbox_dir(settings: Settings) -> Path:
    """The folder mail is written to when no SMTP server is set."""
    return settings.home / "outbox"


def outbox_name(message_id: str) -> str:
    """The file name of a Message-ID: the id without ``<>``, unsafe characters replaced,
    and a hash of the id appended if any were, so two ids never share a file."""
    core = message_id.strip().removeprefix("<").removesuffix(">")
    safe = _UNSAFE.sub("_", core).lstrip(".")[:120]
    if safe != core:
        safe = f"{safe}-{hashlib.sha256(message_id.encode('utf-8')).hexdigest()[:16]}"
    return f"{safe}.eml"


def write_outbox(message: EmailMessage, message_id: str, settings: Settings) -> Path:
    """Write ``message`` to its outbox file (replacing an earlier copy); the file's path."""
    path = outbox_dir(settings) / outbox_name(message_id)
    private_folder(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(bytes(message))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def outbox_messages(settings: Settings, limit: int | None = None) -> list[OutboxEntry]:
    """The outbox's messages, most recently written first (at most ``limit``).

    Only headers are read. A file that is not a readable mail is skipped (and logged).
    """
    try:
        with os.scandir(outbox_dir(settings)) as scan:
            found = [
                (entry.stat().st_mtime, entry.name)
                for entry in scan
                if _NAME.fullmatch(entry.name) and entry.is_file()
            ]
    except FileNotFoundError:  # nothing was ever written
        return []
    entries: list[OutboxEntry] = []
    for _, name in sorted(found, reverse=True):
        if limit is not None and len(entries) >= limit:
            break
        entry = _read_entry(outbox_dir(settings) / name)
        if entry is not None:
            entries.append(entry)
    return entries


def _read_entry(path: Path) -> OutboxEntry | None:
    try:
        with path.open("rb") as fp:
            head = fp.read(_HEADER_BYTES)
            size = os.fstat(fp.fileno()).st_size
        message = message_from_bytes(head, policy=policy.default)
        message_id = str(message.get("Message-ID", "")).strip()
        if not message_id:
            raise ValueError("no Message-ID header")
        date = getattr(message.get("Date"), "datetime", None)
        if isinstance(date, datetime) and date.tzinfo is not None:
            date = date.astimezone(UTC)
        return OutboxEntry(
            name=path.name,
            message_id=message_id,
            to=str(message.get("To", "")),
            subject=str(message.get("Subject", "")),
            date=date if isinstance(date, datetime) else None,
            size=size,
        )
    except FileNotFoundError:  # removed since the folder was listed
        return None
    except Exception as exc:  # a corrupt file, whatever the parser trips on: skip it
        log.warning("outbox: skipping %s: %s", path.name, exc)
        return None


def outbox_message(settings: Settings, name: str) -> OutboxMessage:
    """The outbox message in file ``name``.

    :raises NotFound: no such file, or ``name`` is not an outbox file name (a path).
    """
    missing = NotFound(f"no message {name!r} in the outbox", field="name")
    if not _NAME.fullmatch(name):
        raise missing
    try:
        data = (outbox_dir(settings) / name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise missing from None
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)  # what policy.default parses into

    def body(subtype: str) -> str | None:
        part = message.get_body(preferencelist=(subtype,))
        if part is None or part.get_content_subtype() != subtype:
            return None
        try:
            content = part.get_content()
        except (LookupError, ValueError):  # an unknown charset or a broken encoding
            payload = part.get_payload(decode=True)
            content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        return content if isinstance(content, str) else None

    headers = [(key, str(value)) for key, value in message.items()]
    return OutboxMessage(name=name, headers=headers, text=body("plain"), html=body("html"))
