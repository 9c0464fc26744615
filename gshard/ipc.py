"""Messages from shards to the manager, as datagrams on one shared unix socketpair.

Datagrams keep message boundaries without framing code, and one socket for
all shards means the manager polls a single descriptor. The sender's PID is
in each message; the manager knows which slot and generation it belongs to.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Comfortably below the default unix datagram limit, traceback included.
MAX_DATAGRAM = 32768


class Kind(enum.Enum):
    READY = "ready"  # the application is loaded and the shard accepts connections
    BEAT = "beat"  # the event loop is alive
    BOOT_FAILED = "boot-failed"  # the application did not load; detail holds the traceback
    RECYCLE = "recycle"  # --max-requests reached: replace this shard


@dataclass(frozen=True)
class Message:
    kind: Kind
    pid: int
    detail: str = ""


def encode(message: Message) -> bytes:
    head = f"{message.kind.value} {message.pid}\n".encode("ascii")
    body = message.detail.encode("utf-8", "replace")
    if len(head) + len(body) > MAX_DATAGRAM:
        marker = b"\n[... truncated]"
        body = body[: MAX_DATAGRAM - len(head) - len(marker)] + marker
    return head + body


def decode(data: bytes) -> Message:
    """The message in a datagram; ValueError if it is not one of ours."""
    head, _, body = data.partition(b"\n")
    kind_text, _, pid_text = head.decode("ascii").partition(" ")
    return Message(Kind(kind_text), int(pid_text), body.decode("utf-8", "replace"))
