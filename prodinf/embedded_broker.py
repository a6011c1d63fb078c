"""The embedded broker: kombu's filesystem transport, with each message whole before
anyone can read it.

kombu writes a message file in place, under the name readers look for: a worker listing
the folder at that moment reads it half-written, fails to decode it (an unrecoverable
error that stops the worker) and the message is gone. Here a message is written under
a name no reader takes (``<name>.msg.part``), then renamed to its queue's name, which is
atomic on POSIX: a reader finds a whole message or none.

kombu's reader sorts the whole folder (every queue's messages) and walks it from the
front at each poll, and moves the file it takes to the temporary folder, a copy on
another device, which two workers can both make. Here a reader lists the folder, keeps
its queue's names, and takes the oldest by renaming it into ``processed`` (same
folder tree, so atomic: one reader wins it), so a poll of a deep folder costs one
listing, not a sort and a walk.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic_ns
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

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

    def _get(self, queue: Any) -> Any:  # type: ignore[override]
        """Take the oldest whole message of ``queue``, or raise :class:`Empty`."""
        wanted = f"{queue}.msg"
        folder = self.data_folder_in
        names = sorted(n for n in os.listdir(folder) if n.partition(".")[2] == wanted)
        for name in names:  # "<ns>_<uuid>.<queue>.msg": oldest first
            claimed = os.path.join(self.processed_folder, name)
            try:
                os.rename(os.path.join(folder, name), claimed)
            except FileNotFoundError:
                continue  # another worker took it first
            try:
                with open(claimed, "rb") as f:
                    payload = f.read()
                if not self.store_processed:
                    os.remove(claimed)
            except OSError as exc:
                raise ChannelError(f"Cannot read file {claimed!r} from queue.") from exc
            return loads(bytes_to_str(payload))  # type: ignore[no-untyped-call]
        raise Empty()


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
