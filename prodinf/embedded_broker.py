"""The embedded broker: kombu's filesystem transport, with each message whole before
anyone can read it.

kombu writes a message file in place, under the name readers look for: a worker listing
the folder at that moment reads it half-written, fails to decode it (an unrecoverable
error that stops the worker) and the message is gone. Here a message is written under
a name no reader takes (``<name>.msg.part``), then renamed to its queue's name, which is
atomic on POSIX: a reader finds a whole message or none.

Names carry a zero-padded ``monotonic_ns``, so kombu's reader, which sorts the names,
takes each queue's messages in the order they were sent.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic_ns
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

from prodinf.files import open_private

__all__ = ["TRANSPORT", "Channel", "Transport", "queued_messages"]

#: What ``broker_transport`` names for the embedded broker.
TRANSPORT = "prodinf.embedded_broker:Transport"


class Channel(filesystem.Channel):
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Put ``payload`` onto ``queue``, visible only once it is whole."""
        name = f"{monotonic_ns():020d}_{uuid.uuid4()}.{queue}.msg"  # sorts as sent
        final = os.path.join(self.data_folder_out, name)
        partial = f"{final}.part"  # "<queue>.msg.part" is no queue's name
        try:
            with os.fdopen(open_private(partial), "wb") as f:  # 0600: messages are private
                f.write(str_to_bytes(dumps(payload)))  # type: ignore[no-untyped-call]
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


def queued_messages(folder: str, queues: list[str]) -> dict[str, int]:
    """How many messages wait in each of ``queues`` (the files ``<stamp>_<uuid>.<queue>.msg``
    in the transport's ``folder``; one taken by a worker is gone from it)."""
    found = dict.fromkeys(queues, 0)
    with os.scandir(folder) as entries:
        for entry in entries:
            queue = entry.name.partition(".")[2].removesuffix(".msg")
            if queue in found and entry.name.endswith(".msg"):
                found[queue] += 1
    return found
