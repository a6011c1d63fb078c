"""What a step logs, kept with its attempt: ``ctx.log`` and the standard ``logging`` module.

While a step runs, :func:`capturing` makes it the owner of every log record its
thread writes (a ``ContextVar``, so steps running in threads of one worker keep
their own lines apart) and of every record written through its ``ctx.log`` (from
any thread). One handler on the root logger, installed once per process, hands
each record at ``INFO`` or above to its owner, which masks it (credentials, and
the values of the job's secret params) and buffers it. The buffer is written to
the store in one transaction per second (a flusher thread per process) and when
the step ends: a worker killed mid-step loses at most the last second of lines.

An attempt keeps its newest :data:`MAX_LINES` lines and :data:`MAX_BYTES` of text;
when older ones go, a line in their place says how many.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from prodinf.exceptions import ProdinfError, TransientError
from prodinf.redact import redact_text
from prodinf.store import JobStore
from prodinf.store.steplogs import LogLine, attempt_lines, drop_through, lock_job, write_lines

__all__ = [
    "FLUSH_EVERY",
    "MAX_BYTES",
    "MAX_LINES",
    "MAX_MESSAGE",
    "StepLogger",
    "StepTag",
    "capturing",
    "step_logger",
    "step_of",
    "tag_log_records",
]

log = logging.getLogger(__name__)

#: Lines an attempt of a step keeps (its newest).
MAX_LINES = 500
#: Characters of messages an attempt of a step keeps (its newest lines).
MAX_BYTES = 64 * 1024
#: Characters of one line kept; a longer one is cut.
MAX_MESSAGE = 4000
#: Seconds between writes of a running step's new lines to the store.
FLUSH_EVERY = 1.0
#: The lowest level kept.
LEVEL = logging.INFO
#: The logger of the line that says older lines were dropped.
DROPPED_LOGGER = "prodinf.steplog"
#: The parent of every ``ctx.log``: ``prodinf.steps.<kind>``.
STEPS_LOGGER = "prodinf.steps"

_DROPPED = re.compile(r"^\[(\d+) earlier lines")
_FORMATTER = logging.Formatter()


class StepLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``ctx.log``: a logger (``info``, ``warning``, ``exception``, ...) whose lines are
    kept with the step's attempt, from whichever thread the step writes them."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(kwargs.get("extra") or {}), **(self.extra or {})}
        return msg, kwargs


def step_logger(kind: str, job_id: str, step: str) -> StepLogger:
    """The ``ctx.log`` of ``step`` of job ``job_id``: logger ``prodinf.steps.<kind>``,
    at ``INFO`` unless configured otherwise."""
    parent = logging.getLogger(STEPS_LOGGER)
    if parent.level == logging.NOTSET:
        parent.setLevel(LEVEL)
    return StepLogger(
        logging.getLogger(f"{STEPS_LOGGER}.{kind}"),
        {"prodinf_job": job_id, "prodinf_step": step},
    )


@dataclass(frozen=True)
class StepTag:
    """Which execution of which job's step wrote a log record: what a worker's log line
    says of it (``job=<id> step=<name>``, or the fields of a JSON line)."""

    job_id: str
    kind: str | None
    step: str
    queue: str | None
    attempt: int

    def fields(self) -> dict[str, Any]:
        """``job_id``, ``kind``, ``step``, ``queue`` and ``attempt``: a JSON line's."""
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "step": self.step,
            "queue": self.queue,
            "attempt": self.attempt,
        }


@dataclass
class _Stored:
    seq: int
    size: int
    at: datetime | None


class _Capture:
    """The lines of one execution of a step: buffered, then written to the store."""

    def __init__(self, store: JobStore, tag: StepTag, secrets: Iterable[str]) -> None:
        self.store, self.tag = store, tag
        self.job_id, self.step, self.attempt = tag.job_id, tag.step, tag.attempt
        self.secrets = tuple(secrets)
        self.lock = threading.Lock()  # the buffer
        self.flushing = threading.Lock()  # one write at a time, in order
        self.pending: deque[LogLine] = deque()
        self.pending_size = 0
        #: Lines dropped from the buffer before they were written, and the newest one's time.
        self.lost = 0
        self.lost_at: datetime | None = None
        #: What the store holds of this attempt (loaded on the first write).
        self.stored: deque[_Stored] | None = None
        self.stored_size = 0
        #: Lines of this attempt dropped from the store, and the number of the note saying so.
        self.dropped = 0
        self.note_seq: int | None = None
        self.gone = False
        self.warned = False

    # -- buffering (any thread) -------------------------------------------------------------

    def add(self, record: logging.LogRecord) -> None:
        line = LogLine(
            at=datetime.fromtimestamp(record.created, UTC),
            level=record.levelname[:10],
            logger=record.name[:200],
            message=_text(record, self.secrets),
        )
        with self.lock:
            self.pending.append(line)
            self.pending_size += len(line.message)
            self._bound()

    def _bound(self) -> None:
        """Keep the buffer within what the store keeps (less one line, for the note
        that older lines were dropped)."""
        while len(self.pending) > MAX_LINES - 1 or self.pending_size > MAX_BYTES:
            old = self.pending.popleft()
            self.pending_size -= len(old.message)
            self.lost += 1
            self.lost_at = old.at

    # -- writing (the flusher thread, and the step's thread when it ends) --------------------

    def flush(self) -> None:
        """Write the buffered lines in one transaction; on a store error keep them for the
        next try (and say so once)."""
        with self.flushing:
            with self.lock:
                if self.gone or not (self.pending or self.lost):
                    return
                lines, lost, lost_at = list(self.pending), self.lost, self.lost_at
                self.pending.clear()
                self.pending_size, self.lost, self.lost_at = 0, 0, None
            try:
                with self.store.transaction() as conn:
                    self._write(conn, lines, lost, lost_at)
            except Exception as exc:
                self.stored = None  # rolled back: read the attempt's lines again next time
                transient = isinstance(exc, TransientError)
                if transient:
                    self._keep(lines, lost, lost_at)
                if not self.warned:
                    self.warned = True
                    log.warning(
                        "job %s step %s: could not store its log lines%s: %s",
                        self.job_id,
                        self.step,
                        " yet" if transient else "",
                        exc if isinstance(exc, ProdinfError) else type(exc).__name__,
                    )

    def _keep(self, lines: list[LogLine], lost: int, lost_at: datetime | None) -> None:
        with self.lock:
            self.pending.extendleft(reversed(lines))
            self.pending_size += sum(len(line.message) for line in lines)
            self.lost += lost
            self.lost_at = self.lost_at or lost_at
            self._bound()

    def _write(
        self, conn: Connection, lines: list[LogLine], lost: int, lost_at: datetime | None
    ) -> None:
        if not lock_job(conn, self.job_id):
            self.gone = True  # deleted: its lines went with it
            return
        stored = self._load(conn) if self.stored is None else self.stored
        if lost:
            # Lines never written are newer than every stored line: those all go, and
            # the note goes just before the lines kept.
            self._drop(conn, len(stored))
            self.dropped += lost
            seqs = write_lines(
                conn, self.job_id, self.step, self.attempt, [self._note(lost_at), *lines]
            )
            self.note_seq = seqs[0]
            self._stored(seqs[1:], lines)
            return
        self._stored(write_lines(conn, self.job_id, self.step, self.attempt, lines), lines)
        over, size = 0, self.stored_size
        while over < len(stored) and (
            len(stored) - over + (1 if self.dropped or over else 0) > MAX_LINES or size > MAX_BYTES
        ):
            size -= stored[over].size
            over += 1
        if over:
            newest = self._drop(conn, over)
            # The note takes the number of the newest line dropped: it sorts before
            # every line kept.
            note = self._note(newest.at)
            write_lines(conn, self.job_id, self.step, self.attempt, [note], first_seq=newest.seq)
            self.note_seq = newest.seq

    def _stored(self, seqs: list[int], lines: list[LogLine]) -> None:
        assert self.stored is not None
        for seq, line in zip(seqs, lines, strict=True):
            self.stored.append(_Stored(seq, len(line.message), line.at))
            self.stored_size += len(line.message)

    def _load(self, conn: Connection) -> deque[_Stored]:
        """What the store holds of this attempt: a step that waited runs again and goes on
        with its attempt's lines."""
        self.stored = deque()
        self.stored_size, self.dropped, self.note_seq = 0, 0, None
        for line in attempt_lines(conn, self.job_id, self.step, self.attempt):
            found = _DROPPED.match(line.message) if line.logger == DROPPED_LOGGER else None
            if found:
                self.dropped, self.note_seq = int(found.group(1)), line.seq
            else:
                self.stored.append(_Stored(line.seq, line.size, line.at))
                self.stored_size += line.size
        return self.stored

    def _drop(self, conn: Connection, count: int) -> _Stored:
        """Delete the ``count`` oldest stored lines and the note before them; the newest
        line deleted (a placeholder if none)."""
        assert self.stored is not None
        newest = _Stored(self.note_seq or 0, 0, None)
        for _ in range(count):
            newest = self.stored.popleft()
            self.stored_size -= newest.size
        self.dropped += count
        if count or self.note_seq is not None:
            drop_through(conn, self.job_id, self.step, self.attempt, newest.seq)
        self.note_seq = None
        return newest

    def _note(self, at: datetime | None) -> LogLine:
        return LogLine(
            at=at or datetime.now(UTC),
            level="WARNING",
            logger=DROPPED_LOGGER,
            message=(
                f"[{self.dropped} earlier lines of this attempt were dropped: an attempt "
                f"keeps its newest {MAX_LINES} lines, {MAX_BYTES // 1024} KB]"
            ),
        )


def _text(record: logging.LogRecord, secrets: tuple[str, ...]) -> str:
    """A record's message with its traceback, masked, cut, and storable everywhere."""
    try:
        text = record.getMessage()
    except Exception:  # a bad format string must not lose the line
        text = f"{record.msg!r} {record.args!r}"
    if record.exc_info:
        text += "\n" + _FORMATTER.formatException(record.exc_info)
    if record.stack_info:
        text += "\n" + record.stack_info
    text = redact_text(text, secrets=secrets)
    # PostgreSQL's text takes no NUL, and no database takes a lone surrogate.
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 8] + " …(cut)"
    return text


# -- who owns a record -------------------------------------------------------------------------

#: The step whose code this thread runs (or a thread started in its context).
_current: ContextVar[_Capture | None] = ContextVar("prodinf_step_log", default=None)
#: Every step running in this process, by (job id, step): ``ctx.log`` names its own.
_running: dict[tuple[str, str], _Capture] = {}
_running_lock = threading.Lock()


def _owner(record: logging.LogRecord) -> _Capture | None:
    job = getattr(record, "prodinf_job", None)
    if job is not None:
        return _running.get((job, getattr(record, "prodinf_step", "")))
    return _current.get()


def step_of(record: logging.LogRecord) -> tuple[StepTag, tuple[str, ...]] | None:
    """The step that wrote ``record`` (its tag, and the job's secret values to mask in
    what it says), or ``None`` for a record no step wrote.

    Read from what the record was tagged with when it was made (:func:`tag_log_records`)
    or, for a line of ``ctx.log`` from another thread, from the step it names.
    """
    tag = getattr(record, "prodinf_tag", None)
    if isinstance(tag, StepTag):
        return tag, getattr(record, "prodinf_secrets", ())
    job = getattr(record, "prodinf_job", None)
    if job is None:
        return None
    capture = _running.get((job, getattr(record, "prodinf_step", "")))
    if capture is None:
        return None
    return capture.tag, capture.secrets


class _Handler(logging.Handler):
    """Hands each record at ``LEVEL`` or above to the step that wrote it, if any."""

    def emit(self, record: logging.LogRecord) -> None:
        capture = _owner(record)
        if capture is not None:
            capture.add(record)


_handler = _Handler(LEVEL)


def _install() -> None:
    tag_log_records()
    root = logging.getLogger()
    if _handler not in root.handlers:
        root.addHandler(_handler)


class _Flusher:
    """One thread per process that writes every running step's new lines each second."""

    def __init__(self) -> None:
        self.wake = threading.Condition()
        self.captures: set[_Capture] = set()
        self.thread: threading.Thread | None = None

    def add(self, capture: _Capture) -> None:
        with self.wake:
            self.captures.add(capture)
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._loop, daemon=True, name="prodinf-step-logs"
                )
                self.thread.start()

    def remove(self, capture: _Capture) -> None:
        with self.wake:
            self.captures.discard(capture)

    def _loop(self) -> None:
        idle = 0.0
        while True:
            with self.wake:
                self.wake.wait(FLUSH_EVERY)
                captures = list(self.captures)
                idle = 0.0 if captures else idle + FLUSH_EVERY
                if idle >= 60.0:
                    self.thread = None  # add() starts another when needed
                    return
            for capture in captures:
                try:
                    capture.flush()
                except Exception:  # the thread serves every step: it must go on
                    log.exception("job %s: writing its step's log failed", capture.job_id)


#: Per process: a forked pool child has none of its parent's threads.
_flushers: dict[int, _Flusher] = {}


def _flusher() -> _Flusher:
    pid = os.getpid()
    found = _flushers.get(pid)
    if found is None:
        found = _flushers.setdefault(pid, _Flusher())
    return found


@contextmanager
def capturing(
    store: JobStore,
    job_id: str,
    step: str,
    attempt: int,
    *,
    secrets: Iterable[str] = (),
    kind: str | None = None,
    queue: str | None = None,
) -> Iterator[None]:
    """Keep what the block logs (this thread, and ``ctx.log`` from any thread) with
    ``attempt`` of ``step``, each of ``secrets`` masked; written by the end of the block.
    Every record the block's thread makes meanwhile is tagged with the job, its ``kind``
    and ``queue``, the step and the attempt (:func:`step_of`)."""
    _install()
    capture = _Capture(store, StepTag(job_id, kind, step, queue, attempt), secrets)
    with _running_lock:
        _running[(job_id, step)] = capture
    token = _current.set(capture)
    flusher = _flusher()
    flusher.add(capture)
    try:
        yield
    finally:
        _current.reset(token)
        with _running_lock:
            if _running.get((job_id, step)) is capture:
                del _running[(job_id, step)]
        flusher.remove(capture)
        capture.flush()


# -- worker log lines ------------------------------------------------------------------------


def tag_log_records() -> None:
    """Give every log record of this process ``prodinf_where``: ``job=<id> step=<name> ``
    for one a step's thread writes (its message masked with the job's secret params),
    else empty; for a log format that says which job and step wrote a line (the
    worker's). Such a record also holds the step's :class:`StepTag` and the job's secret
    values, which :func:`step_of` reads (a JSON line's fields)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "prodinf_tags", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        capture = _current.get()
        if capture is None:
            record.prodinf_where = ""
            return record
        record.prodinf_where = f"job={capture.job_id} step={capture.step} "
        record.prodinf_tag, record.prodinf_secrets = capture.tag, capture.secrets
        if capture.secrets:  # masked for every handler, the worker's console too
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: the handlers report it
                return record
            record.msg, record.args = redact_text(message, secrets=capture.secrets), None
        return record

    factory.prodinf_tags = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
