"""How many connections wait in a listening socket's accept queue.

The manager holds every listener, so it can ask the kernel about each
shard's queue itself, even while that shard is blocked, booting or gone. On
Linux, ``getsockopt(TCP_INFO)`` on a listening socket reports the current
queue length in ``tcpi_unacked`` and its limit (the backlog) in
``tcpi_sacked``: the numbers ``ss -ltn`` shows as Recv-Q and Send-Q.
"""

from __future__ import annotations

import socket
import struct

from gshard.sockets.listener import ListenerSet

# struct tcp_info (linux/tcp.h) begins with 8 one-byte fields, then 32-bit
# ones: rto, ato, snd_mss, rcv_mss, unacked, sacked, ...
_HEAD = struct.Struct("8B6I")
_UNACKED, _SACKED = 12, 13


def accept_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(waiting connections, limit) of a listening TCP socket; None if unknown."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.fileno() < 0:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _HEAD.size)
    except (OSError, AttributeError):
        return None
    if len(info) < _HEAD.size:
        return None
    fields = _HEAD.unpack(info)
    return fields[_UNACKED], fields[_SACKED]


def slot_queues(listeners: list[ListenerSet]) -> dict[int, tuple[int, int]]:
    """Each slot's accept queue (waiting, limit), summed over its TCP listeners."""
    queues: dict[int, tuple[int, int]] = {}
    for listener_set in listeners:
        if listener_set.address.is_unix:
            continue
        for slot, sock in enumerate(listener_set.sockets):
            found = accept_queue(sock)
            if found is not None:
                depth, limit = queues.get(slot, (0, 0))
                queues[slot] = (depth + found[0], limit + found[1])
    return queues
