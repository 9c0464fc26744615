"""The kernel behaviours gshard's design rests on, checked on this kernel.

If one of these changes, the restart design must change with it: these tests
use bare sockets on loopback, no gshard process.
"""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from gshard.sockets.steering import steer


def _group(count: int, family: int = socket.AF_INET, host: str = "127.0.0.1"):
    socks = []
    port = 0
    for _ in range(count):
        sock = socket.socket(family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.setblocking(False)
        port = sock.getsockname()[1]
        socks.append(sock)
    return socks, port


def _accept_all(sock: socket.socket) -> int:
    accepted = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return accepted
        conn.close()
        accepted += 1


def _connect(host: str, port: int, count: int, family: int = socket.AF_INET):
    conns = []
    for _ in range(count):
        conn = socket.socket(family)
        conn.settimeout(5)
        conn.connect((host, port))
        conns.append(conn)
    return conns


def _reset_count(conns) -> int:
    """Connections the server side has reset by now (a read sees ECONNRESET)."""
    time.sleep(0.2)  # let the RSTs of a close arrive; loopback needs far less
    resets = 0
    for conn in conns:
        conn.setblocking(False)
        try:
            conn.recv(1)
        except ConnectionResetError:
            resets += 1
        except BlockingIOError:
            pass  # still open, waiting in a queue
    return resets


@pytest.mark.timeout(30)
def test_closing_a_reuseport_listener_resets_its_queue_unless_another_reference_holds_it():
    with contextlib.ExitStack() as stack:
        socks, port = _group(2)
        for sock in socks:
            stack.callback(sock.close)
        conns = _connect("127.0.0.1", port, 200)
        for conn in conns:
            stack.callback(conn.close)
        # A second reference (the manager's, in gshard) keeps socket 1 and its queue.
        held = socks[1].dup()
        stack.callback(held.close)
        socks[1].close()
        assert _reset_count(conns) == 0
        assert _accept_all(held) + _accept_all(socks[0]) == 200

        # The last reference closing drops what is queued: the hazard gshard avoids.
        more = _connect("127.0.0.1", port, 200)
        for conn in more:
            stack.callback(conn.close)
        accepted = _accept_all(socks[0])
        queued = 200 - accepted
        assert queued > 0
        held.close()
        assert _reset_count(more) == queued


@pytest.mark.timeout(30)
@pytest.mark.parametrize("use_rxhash", [True, False], ids=["rxhash", "source-port"])
@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")], ids=["v4", "v6"]
)
def test_steering_keeps_new_connections_off_the_last_sockets(use_rxhash, family, host):
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    socks, port = _group(4, family, host)
    try:
        for count in (3, 2):
            steer(socks[0], range(count), use_rxhash)
            conns = _connect(host, port, 400, family)
            spread = [_accept_all(sock) for sock in socks]
            for conn in conns:
                conn.close()
            assert spread[count:] == [0] * (4 - count)
            assert all(n > 400 / count * 0.6 for n in spread[:count]), spread
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.timeout(30)
def test_steering_to_any_set_of_sockets():
    socks, port = _group(3)
    try:
        steer(socks[0], [0, 2])
        conns = _connect("127.0.0.1", port, 300)
        spread = [_accept_all(sock) for sock in socks]
        for conn in conns:
            conn.close()
        assert spread[1] == 0
        assert spread[0] > 90 and spread[2] > 90, spread
    finally:
        for sock in socks:
            sock.close()
