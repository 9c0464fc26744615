"""Closing a client socket without destroying the response still in flight.

Closing a socket that has unread input makes the kernel answer with RST,
which can discard a response the client has not read yet. After refusing a
request (whose body, or the requests behind it, were never read) the
connection therefore shuts down its sending side first and reads and drops
what the client still sends, briefly and boundedly, before closing.
"""

from __future__ import annotations

import socket
import time

# How long and how much to keep reading before the close, at most.
LINGER_SECONDS = 2.0
LINGER_BYTES = 256 * 1024
_RECV_SIZE = 65536


def close(sock: socket.socket, linger: bool) -> None:
    """Close ``sock``; with ``linger``, let the client read our last response first."""
    try:
        if linger:
            sock.shutdown(socket.SHUT_WR)
            _drain_input(sock)
    except OSError:
        pass
    finally:
        sock.close()


def _drain_input(sock: socket.socket) -> None:
    """Read and drop what the client still sends until it closes, or the bounds run out."""
    deadline = time.monotonic() + LINGER_SECONDS
    budget = LINGER_BYTES
    while budget > 0:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        sock.settimeout(remaining)
        try:
            data = sock.recv(_RECV_SIZE)
        except OSError:
            return
        if not data:
            return
        budget -= len(data)
