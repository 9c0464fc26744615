"""Request bodies: large, chunked, 100-continue, and bodies the application never reads.

Every test runs once per transport (tcp, unix, tls, proxy: see
``tests/support/transports.py``): a body must arrive whole, and framing
errors end the connection, whether its bytes came in TLS records, after a
PROXY line or on a unix socket. The servers are shared by a module's tests
for one transport (``shared_gshard``).
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.support.processes import Server
from tests.support.rawhttp import Closed, chunked, request_bytes
from tests.support.transports import Transport

MIB = 1024 * 1024


@pytest.fixture
def echo(shared_gshard):
    return shared_gshard("echo:app", "--shards", "2")


def post(transport: Transport, server: Server, path: str, body: bytes,
         headers: tuple[tuple[str, str], ...] = ()) -> dict:
    """What the echo application saw of one POST on a connection of its own."""
    response = transport.request(server, "POST", path, body=body, headers=headers, timeout=10)
    assert response.status == 200, response
    return json.loads(response.body)


def test_the_application_sees_the_transport_it_was_reached_by(transport, echo):
    """The matrix is real: each transport shows in the scheme and the client address."""
    seen = json.loads(transport.request(echo, "GET", "/who").body)
    assert (seen["url_scheme"], seen["remote_addr"]) == (transport.scheme, transport.client_addr)
    assert seen["https"] == ("on" if transport.scheme == "https" else None)


def test_one_mib_post_with_content_length(transport, echo):
    body = os.urandom(MIB)
    echoed = post(transport, echo, "/upload", body)
    assert echoed["content_length"] == str(MIB)
    assert echoed["body_len"] == MIB
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_one_mib_post_chunked(transport, echo):
    body = os.urandom(MIB)
    pieces = [body[i:i + 10000] for i in range(0, MIB, 10000)]  # uneven chunk sizes

    echoed = post(transport, echo, "/upload", chunked(pieces),
                  headers=(("Transfer-Encoding", "chunked"),))
    assert echoed["headers"]["HTTP_TRANSFER_ENCODING"] == "chunked"
    assert echoed["content_length"] is None
    assert echoed["body_len"] == MIB
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_expect_100_continue_is_sent_when_the_app_first_reads(transport, echo):
    body = b"0123456789" * 5000
    head = request_bytes("POST", "/upload?delay=0.5", headers=(
        ("Content-Length", str(len(body))), ("Expect", "100-continue")))
    with transport.connect(echo) as conn:
        conn.send(head)
        # The application sleeps 0.5 s before reading: nothing may come before.
        with pytest.raises(TimeoutError):
            conn.read_head(timeout=0.3)
        interim = conn.read_head(timeout=5)
        assert (interim.version, interim.status, interim.reason) == ("HTTP/1.1", 100, "Continue")
        assert interim.headers == []
        assert conn.buf == b""
        conn.send(body)
        final = conn.read_response()
        assert final.status == 200
        echoed = json.loads(final.body)
        assert echoed["body_len"] == len(body)
        assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
        # The connection is still usable.
        conn.send(request_bytes("GET", "/after"))
        assert json.loads(conn.read_response().body)["path"] == "/after"


def test_expect_100_continue_not_sent_if_the_app_never_reads(transport, echo):
    head = request_bytes("POST", "/noread", headers=(
        ("Content-Length", "100000"), ("Expect", "100-continue")))
    with transport.connect(echo) as conn:
        conn.send(head)
        final = conn.read_response()
        assert final.status == 200, "a 100 Continue came although the app never read"
        assert json.loads(final.body)["body_len"] is None
        # The client never sent the body; only a close can end this exchange cleanly.
        assert final.header("Connection") == "close"
        assert conn.wait_closed()


def _smuggle_body(size: int) -> bytes:
    """A body that is made of request heads: parsing it as requests would show."""
    unit = b"GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n"
    return (unit * (size // len(unit) + 1))[:size]


def test_unread_small_body_is_skipped_and_the_connection_reused(transport, echo):
    body = _smuggle_body(20000)
    with transport.connect(echo) as conn:
        conn.send(request_bytes("POST", "/noread", body=body) + request_bytes("GET", "/next"))
        first = conn.read_response()
        assert first.status == 200 and json.loads(first.body)["path"] == "/noread"
        second = conn.read_response()
        assert second.status == 200
        assert json.loads(second.body)["path"] == "/next"
        assert conn.wait_closed(timeout=0.5) is False  # still open, nothing else sent


@pytest.mark.timeout(30)
def test_unread_large_body_never_parsed_as_requests(transport, echo):
    """1 MiB the app ignores: the server may drop the connection, but never
    answer the request-looking bytes inside the body."""
    body = _smuggle_body(MIB)
    with transport.connect(echo, timeout=10) as conn:
        # The server may close before taking it all; what it answered meanwhile
        # is kept. It must not stop reading without closing either (a timeout).
        conn.send_reading(request_bytes("POST", "/noread", body=body)
                          + request_bytes("GET", "/next"), timeout=10)
        first = conn.read_response(timeout=10)
        assert first.status == 200
        assert json.loads(first.body)["path"] == "/noread"
        # Either the pipelined GET is answered (the body was skipped) or the
        # connection ends; no other response may ever come.
        try:
            second = conn.read_response(timeout=10)
        except Closed:
            second = None
        if second is not None:
            assert second.status == 200
            assert json.loads(second.body)["path"] == "/next"
            conn.wait_closed(timeout=0.5)  # fails on any further bytes
    # Still serving.
    assert json.loads(transport.request(echo, "GET", "/ok").body)["path"] == "/ok"


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n"


@pytest.mark.parametrize(("body", "args"), [
    pytest.param(b"zz\r\n0\r\n\r\n" + SMUGGLED, (), id="bad-chunk-size"),
    pytest.param(b"3\r\nabcXY0\r\n\r\n" + SMUGGLED, (), id="chunk-without-crlf"),
    pytest.param(b"%x\r\n" % 101 + b"0\r\n\r\n" + SMUGGLED + b"p" * (101 - 5 - len(SMUGGLED))
                 + b"\r\n0\r\n\r\n", ("--limit-request-body", "100"), id="chunk-over-limit"),
])
def test_broken_body_caught_by_the_app_ends_the_connection(transport, shared_gshard, body,
                                                           args):
    """Flask turns the error wsgi.input raises into its own 500. The server must
    still drop the connection: the bytes after a framing error are not requests."""
    server = shared_gshard("flask_app:app", "--shards", "1", *args)
    with transport.connect(server) as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + body)
        response = conn.read_response()
        assert response.status >= 400
        assert response.header("Connection") == "close"
        assert conn.wait_closed(timeout=5), "the connection stayed open"
    # The server itself is fine.
    assert transport.request(server, "GET", "/smuggled").status == 200
