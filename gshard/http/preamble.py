"""What may come before a connection's first request: a PROXY header, a TLS handshake.

Both run in the connection's greenlet, never in the accept loop, so a slow
or hostile client holds up nothing but itself, and both spend the same
deadline as the first request head (``--header-timeout``): a connection has
that long to become a request, whatever it trickles.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from gevent import Timeout

from gshard.errors import ProtocolError
from gshard.http.proxy import MAX_HEADER, ProxyProtocol, parse_proxy_header
from gshard.log import error_log


def read_proxy_header(
    sock: socket.socket, proxy: ProxyProtocol, remote: tuple[str, str], deadline: float
) -> tuple[str, str] | None:
    """Take the PROXY header off the stream; the client it names (else ``remote``).

    None if the peer left, or sent nothing in time, before a header. Raises
    ``ProtocolError`` for a peer not allowed to send one, a malformed or
    oversized header, or none at all.

    The bytes are peeked before they are read, and only the header's are
    read: what follows belongs to the request, or to the TLS handshake,
    which must find it still in the socket.
    """
    if not proxy.allowed.allows(remote[0]):
        raise ProtocolError("PROXY protocol connection from a peer that "
                            "--proxy-allow-from does not list")
    taken = b""  # header bytes already read off the socket
    while True:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            peeked = sock.recv(MAX_HEADER - len(taken), socket.MSG_PEEK)
        except TimeoutError:
            if not taken:
                return None
            raise ProtocolError("PROXY protocol header not received in time") from None
        if not peeked:
            return None
        header = parse_proxy_header(taken + peeked, proxy.mode)
        # All of an incomplete header's bytes are the header's: take them
        # (peeking again would return them at once) and wait for the rest.
        count = len(peeked) if header is None else header.length - len(taken)
        while count > 0:
            taken_now = len(sock.recv(count))  # already peeked: no wait
            if not taken_now:
                return None
            count -= taken_now
        if header is not None:
            return remote if header.client is None else header.client
        taken += peeked


def tls_handshake(sock: socket.socket, context: Any, peer: str, deadline: float) -> Any:
    """The TLS socket over ``sock`` once the handshake is done, or None (logged at debug).

    The deadline bounds the whole handshake, not each read. On failure the
    TLS socket is closed here; ``sock`` is the caller's to close either way.
    """
    remaining = max(deadline - time.monotonic(), 0.001)
    timer = Timeout(remaining, TimeoutError)
    timer.start()
    tls = None
    try:
        tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        tls.settimeout(remaining)
        tls.do_handshake()
    except (OSError, ValueError) as exc:
        error_log.debug("TLS handshake with %s failed: %s", peer or "unix socket",
                        exc or type(exc).__name__)
        if tls is not None:
            tls.close()
        return None
    finally:
        timer.close()
    return tls
