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
