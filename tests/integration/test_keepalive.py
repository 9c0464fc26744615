"""Persistent connections: pipelining, HTTP/1.0 keep-alive, Connection: close, idle timeout.

Every test but the 1,100-connection one runs once per transport (tcp, unix,
tls, proxy: see ``tests/support/transports.py``) on one server per transport
(``shared_gshard``): a connection is kept, reused and closed by the same rules
whatever carries it.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.support.processes import need_descriptors
from tests.support.rawhttp import Conn, chunked, request_bytes


@pytest.fixture
def echo(shared_gshard):
    return shared_gshard("echo:app", "--shards", "1", "--keep-alive", "1")


def test_three_pipelined_requests_answered_in_order(transport, echo):
    with transport.connect(echo) as conn:
        conn.send(
            request_bytes("GET", "/first?n=1")
            + request_bytes("POST", "/second", body=b"payload-two")
            + request_bytes("GET", "/third")
        )
        got = []
        for _ in range(3):
            response = conn.read_response()
            assert response.status == 200
            got.append(json.loads(response.body))
        assert [g["path"] for g in got] == ["/first", "/second", "/third"]
        assert got[0]["query"] == "n=1"
        assert got[1]["method"] == "POST" and got[1]["body_len"] == len(b"payload-two")
        assert conn.buf == b""


def test_http10_keep_alive_is_kept(transport, echo):
    with transport.connect(echo) as conn:
        for path in ("/a", "/b"):
            conn.send(request_bytes("GET", path, "HTTP/1.0", (("Connection", "keep-alive"),)))
            response = conn.read_response()
            assert response.version == "HTTP/1.0"
            assert response.header("Connection") == "keep-alive"
            assert json.loads(response.body)["path"] == path
        assert conn.wait_closed(timeout=0.3) is False


def test_higher_http1_minor_versions_are_served_as_http11(transport, echo):
    """RFC 9110 2.5: HTTP/1.2 and up are read as HTTP/1.1, the highest 1.x
    gshard implements: kept alive by default, chunked bodies read, and answered
    as HTTP/1.1 (6.2) with SERVER_PROTOCOL saying so to the application."""
    with transport.connect(echo) as conn:
        for minor in (2, 9):
            conn.send(request_bytes("POST", f"/v{minor}", f"HTTP/1.{minor}",
                                    (("Transfer-Encoding", "chunked"),),
                                    body=chunked([b"one,", b"two"])))
            response = conn.read_response()
            assert (response.version, response.status) == ("HTTP/1.1", 200)
            echoed = json.loads(response.body)
            assert (echoed["path"], echoed["protocol"]) == (f"/v{minor}", "HTTP/1.1")
            assert echoed["body_len"] == len(b"one,two")
        assert conn.wait_closed(timeout=0.3) is False  # still open: 1.1's default
        # Like HTTP/1.1, HTTP/1.2 needs a Host.
        conn.send(request_bytes("GET", "/nohost", "HTTP/1.2", host=False))
        assert conn.read_response().status == 400


def test_http10_without_keep_alive_is_closed(transport, echo):
    with transport.connect(echo) as conn:
        conn.send(request_bytes("GET", "/a", "HTTP/1.0", host=False))
        response = conn.read_response()
        assert response.status == 200
        assert json.loads(response.body)["protocol"] == "HTTP/1.0"
        assert conn.wait_closed(timeout=3)


def test_connection_close_closes_after_the_response(transport, echo):
    with transport.connect(echo) as conn:
        # The request behind the closing one must not be answered.
        conn.send(request_bytes("GET", "/last", headers=(("Connection", "close"),))
                  + request_bytes("GET", "/never"))
        response = conn.read_response()
        assert response.status == 200
        assert response.header("Connection") == "close"
        assert json.loads(response.body)["path"] == "/last"
        assert conn.wait_closed(timeout=3)


def test_idle_keep_alive_connection_closed_after_timeout(transport, echo, request):
    """Reused within --keep-alive (1 s) of its last response, then closed, with
    nothing sent, once idle that long (over TLS, nothing but a closure alert)."""
    with transport.connect(echo) as conn:
        for path in ("/one", "/two"):  # the second reuses it before the timeout
            conn.send(request_bytes("GET", path))
            response = conn.read_response()
            assert response.status == 200
            assert json.loads(response.body)["path"] == path
        idle_from = time.monotonic()
        assert conn.wait_closed(timeout=4, alert=False), "idle connection still open after 4 s"
        idle = time.monotonic() - idle_from
    assert 0.8 <= idle <= 2.0, f"closed after {idle:.2f}s with --keep-alive 1"
    assert not conn.unclean_close, "the server closed TLS without a closure alert"


def test_keep_alive_0_disables_persistent_connections(transport, shared_gshard):
    """As in gunicorn: --keep-alive 0 closes after every response, and says so."""
    server = shared_gshard("echo:app", "--shards", "1", "--keep-alive", "0")
    with transport.connect(server) as conn:
        conn.send(request_bytes("GET", "/only"))
        response = conn.read_response()
        assert response.status == 200
        assert response.header("Connection") == "close"
        assert conn.wait_closed(timeout=3)


@pytest.mark.timeout(60)
def test_idle_connections_past_descriptor_1023_are_closed_too(gshard_proc):
    """The reaper must close idle connections whatever their descriptor number
    (select(2) refuses numbers past 1023).

    TCP only: the reaper sees descriptors, not transports, and 1,100
    connections take seconds to open and drain (and TLS handshakes far more)
    on each transport for nothing more.
    """
    clients = 1100
    need_descriptors(clients + 300)
    server = gshard_proc("hello:app", "--shards", "1", "--keep-alive", "1",
                         "--worker-connections", str(clients + 100))
    conns = [Conn.tcp(server.port, timeout=10) for _ in range(clients)]
    try:
        for conn in conns:
            conn.send(request_bytes("GET", "/"))
        assert all(conn.read_response().status == 200 for conn in conns)
        time.sleep(2.5)  # --keep-alive 1, swept every 0.25 s
        still_open = sum(1 for conn in conns if not conn.wait_closed(timeout=0.01))
        assert still_open == 0, f"{still_open} of {clients} idle connections still open"
        assert "Traceback" not in server.stderr.text, server.stderr.text
    finally:
        for conn in conns:
            conn.close()
