"""The embedded broker, for real: kombu's filesystem transport behind prodinf's ``Runtime``.

``publish`` is ``Runtime.publish`` on a Celery app made by ``create_celery``: the
path a portal or a worker takes to send a run message. What the broker holds is
read back from its queue folder (one file per message). ``down()`` makes the
broker fail for real: the queue folder becomes a plain file, so kombu cannot
write a message (an I/O error, as root too, where taking permissions away would
not be); the folder comes back, with the messages it held, when the block ends.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.engine.registry import Registry
from prodinf.runtime import Runtime

__all__ = ["Broker"]


class Broker:
    """The embedded broker under ``settings.home``, published to as prodinf does."""

    def __init__(self, settings: Settings) -> None:
        assert settings.is_embedded_broker, "the embedded broker needs the default broker URL"
        # Only the runtime's publish is used; its own registry stays empty.
        self.runtime = Runtime(settings, create_celery(settings), Registry())
        self.folder = (settings.home / "broker" / "queues").resolve()

    def publish(self, job_id: str, queue: str) -> None:
        """Send a run message; raises ``BrokerUnavailable`` if the broker cannot take it."""
        self.runtime.publish(job_id, queue)

    def messages(self) -> list[tuple[str, str]]:
        """(job id, queue) of every message the broker holds, oldest first."""
        return [_read(path) for path in self._files()]

    def take(self) -> list[tuple[str, str]]:
        """The messages the broker holds, removed from it (as workers would consume them)."""
        taken = []
        for path in self._files():
            taken.append(_read(path))
            path.unlink()
        return taken

    @contextmanager
    def down(self) -> Iterator[None]:
        """The broker cannot store a message until the block ends."""
        away = self.folder.with_name("queues.away")
        self.folder.rename(away)
        self.folder.write_text("not a folder: the broker cannot write here")
        try:
            yield
        finally:
            self.folder.unlink()
            away.rename(self.folder)

    def close(self) -> None:
        self.runtime.close()

    def _files(self) -> list[Path]:
        # kombu names a message "<monotonic ms>_<uuid>.<queue>.msg"; consumers read
        # them in name order. Messages in one millisecond have no order between them.
        return sorted(self.folder.glob("*.msg"), key=lambda p: int(p.name.split("_", 1)[0]))


def _read(path: Path) -> tuple[str, str]:
    """(job id, queue) of one message file: the task's argument, the queue it is on."""
    message = json.loads(path.read_bytes())
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return str(args[0]), path.name.partition(".")[2].removesuffix(".msg")
