"""Closing a client socket without destroying the response still in flight.

Closing a socket that has unread input makes the kernel answer with RST,
which can discard a response the client has not read yet. After refusing a
request (whose body, or the requests behind it, were never read) the
connection therefore shuts down its sending side first and reads and drops
what the client still sends, briefly and boundedly, before closing.

A TLS connection is ended with a closure alert first (``close_notify``):
without it a client cannot tell a response delimited by the close from one
an attacker truncated (RFC 9112 9.8, RFC 8446 6.1), and strict clients treat
the plain end of the stream as an error.
"""

from __future__ import annotations

import contextlib
import socket
import time

# How long and how much to keep reading before the close, at most.
LINGER_SECONDS = 2.0
# How long a TLS close waits for the client's own closure alert (or its close)
# after sending ours; the client needs only its next read to answer.
CLOSURE_ALERT_WAIT = 1.0
LINGER_BYTES = 256 * 1024
_RECV_SIZE = 65536


def close(sock: socket.socket, linger: bool) -> None:
    """Close ``sock``; with ``linger``, let the client read our last response first."""
    try:
        if hasattr(sock, "unwrap"):  # a TLS socket (ssl is never imported here)
            _send_closure_alert(sock)
        if linger:
            sock.shutdown(socket.SHUT_WR)
            _drain_input(sock)
    except OSError:
        pass
    finally:
        sock.close()


def _send_closure_alert(sock: socket.socket) -> None:
    """Send TLS's close_notify, and give the client a moment to answer with its own.

    ``unwrap`` sends the alert at once, then reads until the client's arrives;
    a client that closes instead, or sends anything else, ends the wait with
    an error, which changes nothing here: the alert has gone out.
    """
    sock.settimeout(CLOSURE_ALERT_WAIT)
    with contextlib.suppress(OSError, ValueError):
        sock.unwrap()  # type: ignore[attr-defined]


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
