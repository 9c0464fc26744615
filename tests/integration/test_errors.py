"""Failures: application exceptions, malformed requests, garbage. The shards survive them all."""

from __future__ import annotations

import random
import select
import socket
import time

import pytest
import requests

from tests.support.rawhttp import Conn, garbage, request_bytes


@pytest.fixture
def failing(gshard_proc):
    return gshard_proc("failing:app", "--shards", "2")


def _serves(server, path="/ok") -> None:
    response = requests.get(server.url + path, timeout=5)
    assert response.status_code == 200
    assert response.text.startswith("ok ")


def test_exception_before_start_response_gives_500(failing):
    pids = sorted(failing.shard_pids())
    assert len(pids) == 2
    with Conn.tcp(failing.port) as conn:
        conn.send(request_bytes("GET", "/before"))
        response = conn.read_response()
        assert response.status == 500
        assert response.header("Connection") == "close"
        assert conn.wait_closed()
    failing.stderr.wait_for(r"Error handling request GET /before", timeout=5)
    failing.stderr.wait_for(r"AppBoom: boom before start_response", timeout=5)
    assert "Traceback (most recent call last)" in failing.stderr.text
    for _ in range(10):  # both shards, most likely; every one of them still serves
        _serves(failing)
    assert sorted(failing.shard_pids()) == pids


@pytest.mark.parametrize(("path", "logged"), [
    ("/upstream-timeout", r"TimeoutError: upstream service timed out"),
    ("/upstream-reset", r"ConnectionResetError: \[Errno 104\] upstream service reset"),
])
def test_app_raising_a_socket_error_of_its_own_gives_500(failing, path, logged):
    """An OSError from the application's own I/O is the application's failure,
    not a sign that the client left: 500 and a traceback, like any exception."""
    with Conn.tcp(failing.port) as conn:
        conn.send(request_bytes("GET", path))
        response = conn.read_response()
        assert response.status == 500
    failing.stderr.wait_for(rf"Error handling request GET {path}", timeout=5)
    failing.stderr.wait_for(logged, timeout=5)
    _serves(failing)


def test_exception_after_headers_truncates_the_response(failing):
    pids = sorted(failing.shard_pids())
    with Conn.tcp(failing.port) as conn:
        conn.send(request_bytes("GET", "/after"))
        response = conn.read_response()
        assert response.status == 200
        assert response.chunked
        # The body is cut short: no terminating zero-size chunk, then a close.
        assert response.body == b"first piece;"
        assert not response.complete
        assert conn.eof
    failing.stderr.wait_for(r"AppBoom: boom after the headers were sent", timeout=5)
    _serves(failing)
    assert sorted(failing.shard_pids()) == pids


BAD_REQUESTS = [
    pytest.param(b"THIS IS NOT HTTP\r\n\r\n", 400, id="400-garbage-request-line"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="400-missing-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                 400, id="400-conflicting-lengths"),
    pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414,
                 id="414-long-uri"),
    pytest.param(b"A" * 9000 + b" / HTTP/1.1\r\nHost: a\r\n\r\n", 400,
                 id="400-long-method"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431,
                 id="431-big-field"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n"
                 + b"".join(b"X-F%d: v\r\n" % i for i in range(150)) + b"\r\n", 431,
                 id="431-too-many-fields"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, id="505-http2"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                 501, id="501-gzip-coding"),
]


@pytest.mark.parametrize(("raw", "status"), BAD_REQUESTS)
def test_bad_request_refused_and_server_keeps_serving(gshard_proc, raw, status):
    server = gshard_proc("failing:app", "--shards", "1")
    pids = server.shard_pids()
    with Conn.tcp(server.port) as conn:
        conn.send(raw + request_bytes("GET", "/ok"))  # the request behind it is never served
        response = conn.read_response()
        assert response.status == status
        assert response.header("Connection") == "close"
        assert conn.wait_closed()
    _serves(server)
    assert server.shard_pids() == pids


@pytest.mark.timeout(45)
def test_garbage_never_kills_a_shard(failing):
    pids = sorted(failing.shard_pids())
    rng = random.Random(1234)
    for _ in range(60):
        with socket.create_connection(("127.0.0.1", failing.port), timeout=5) as sock:
            try:
                sock.sendall(garbage(rng, "/ok"))
                sock.shutdown(socket.SHUT_WR)  # EOF: nothing more is coming
                while sock.recv(65536):  # the server answers 4xx or closes
                    pass
            except (ConnectionResetError, BrokenPipeError):
                pass
    for _ in range(10):
        _serves(failing)
    assert sorted(failing.shard_pids()) == pids
    assert "Traceback" not in failing.stderr.text, failing.stderr.text


@pytest.mark.timeout(20)
def test_slow_request_head_gets_408(gshard_proc):
    server = gshard_proc("failing:app", "--shards", "1", "--header-timeout", "1")
    with Conn.tcp(server.port) as conn:
        started = time.monotonic()
        conn.send(b"GET /ok HTTP/1.1\r\nHost: a\r\n")
        for i in range(40):  # a field every 0.1 s, never the end of the head
            if select.select([conn.sock], [], [], 0.1)[0]:
                break  # the server has answered
            conn.send(b"X-Drip-%d: y\r\n" % i)
        answered_after = time.monotonic() - started
        response = conn.read_response()
        assert response.status == 408
        assert 0.8 <= answered_after <= 2.5, f"408 after {answered_after:.2f}s"
    _serves(server)
