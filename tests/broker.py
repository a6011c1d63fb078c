"""The embedded broker, for real: kombu's filesystem transport behind prodinf's ``Runtime``.

``publish`` is ``Runtime.publish`` on a Celery app made by ``create_celery``: the
path a portal or a worker takes to send a run message. What the broker holds is
read back from its queue folder, one file per message (``tests.embedded.messages``).
``down()`` makes the broker fail for real: the queue folder becomes a plain file,
so kombu cannot write a message (an I/O error, as root too, where taking
permissions away would not be); the folder comes back, with the messages it
held, when the block ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.engine.registry import Registry
from prodinf.runtime import Runtime
from tests.embedded import messages

__all__ = ["Broker"]


class Broker:
    """The embedded broker under ``settings.home``, published to as prodinf does."""

    def __init__(self, settings: Settings) -> None:
        assert settings.is_embedded_broker, "the embedded broker needs the default broker URL"
        # Only the runtime's publish is used; its own registry stays empty.
        self.runtime = Runtime(settings, create_celery(settings), Registry())
        self.home = settings.home
        self.folder = (settings.home / "broker" / "queues").resolve()

    def publish(self, job_id: str, queue: str) -> None:
        """Send a run message; raises ``BrokerUnavailable`` if the broker cannot take it."""
        self.runtime.publish(job_id, queue)

    def messages(self) -> list[tuple[str, str]]:
        """(job id, queue) of every message the broker holds, oldest first."""
        return [(str(m["args"][0]), _queue(m["file"])) for m in messages(self.home)]

    def take(self) -> list[tuple[str, str]]:
        """The messages the broker holds, removed from it (as workers would consume them)."""
        held = messages(self.home)
        for message in held:
            (self.folder / message["file"]).unlink()
        return [(str(m["args"][0]), _queue(m["file"])) for m in held]

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


def _queue(name: str) -> str:
    """The queue a message file is on: prodinf names it "<ns>_<uuid>.<queue>.msg"."""
    return name.partition(".")[2].removesuffix(".msg")
