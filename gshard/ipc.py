"""What the manager and its shards tell each other, in both directions.

Down, at the fork: a ``ShardSpec`` (its slot, sockets and the channel back).
Up: messages from shards to the manager, as datagrams on one shared unix
socketpair. Datagrams keep message boundaries without framing code, and one
socket for all shards means the manager polls a single descriptor. The
sender's PID is in each message; the manager knows which slot and generation
it belongs to.

Both sides import this module; the manager imports nothing else of the
serving side but the two entry points it runs in the processes it forks
(``shard.boot.run``, ``shard.template.run``), a rule import-linter checks.
"""

from __future__ import annotations

import enum
import os
import signal
import socket
from dataclasses import dataclass
from typing import Any

from gshard.addresses import BindAddress
from gshard.config import Config

# Comfortably below the default unix datagram limit, traceback included.
MAX_DATAGRAM = 32768
# Down, the manager's one word that is not a way to leave at once: serve on as
# a lame duck (keep accepting, every response closes its connection) until a
# drain follows. A real-time signal, so that nothing sends it by accident (a
# terminal sends HUP, WINCH and INT to a whole foreground process group).
LAME_DUCK_SIGNAL = signal.SIGRTMIN


@dataclass
class ShardSpec:
    """What the manager hands a shard when it forks it."""

    config: Config
    slot: int
    generation: int
    listeners: list[tuple[socket.socket, BindAddress, int]]  # socket, address, bound port
    channel: socket.socket
    manager_pid: int
    # Retired (SIGUSR2), how long it keeps accepting what is queued: the
    # manager's ``Timings.retire_settle``, which also adds it to its grace.
    retire_settle: float
    # The shard as gunicorn's hooks see it (a ``hooks.Worker``, made before the fork).
    worker: Any = None


class Kind(enum.Enum):
    READY = "ready"  # the application is loaded and the shard accepts connections
    BEAT = "beat"  # the event loop is alive; detail holds the shard's counters (metrics.encode)
    BOOT_FAILED = "boot-failed"  # the application did not load; detail holds the traceback
    RECYCLE = "recycle"  # --max-requests reached: replace this shard
    BLOCKED = "blocked"  # the event loop is blocked; detail says in which code
    # --preload: a template forked a shard; detail: "PID GENERATION AGE" (the shard's)
    SPAWNED = "spawned"
    SOURCES = "sources"  # --reload: source files of the application's modules, one a line


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


def send(channel: socket.socket, kind: Kind, detail: str = "") -> bool:
    """Tell the manager something; False if the message could not be sent."""
    try:
        channel.send(encode(Message(kind, os.getpid(), detail)))
    except OSError:
        return False
    return True
