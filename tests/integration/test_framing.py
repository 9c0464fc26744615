"""How responses are framed: chunked, close-delimited, write(), close(), file_wrapper.

Every test runs once per transport (tcp, unix, tls, proxy: see
``tests/support/transports.py``), on one streaming server per transport
(``shared_gshard``): a response is framed the same whatever carries it, but
for the one difference ``test_file_wrapper_sends_the_file`` names.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import time

import pytest

from tests.support.rawhttp import request_bytes


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("framing") / "payload.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 123))  # several sendfile rounds, odd size
    return path


@pytest.fixture
def streaming(shared_gshard, data_file):
    return shared_gshard("streaming:app", "--shards", "1",
                         env={"GSHARD_TEST_FILE": str(data_file)})


def test_no_length_on_http11_is_chunked(transport, streaming):
    with transport.connect(streaming) as conn:
        for _ in range(2):  # and the connection stays usable after it
            conn.send(request_bytes("GET", "/nolength"))
            response = conn.read_response()
            assert response.status == 200
            assert response.header("Transfer-Encoding") == "chunked"
            assert response.header("Content-Length") is None
            assert response.complete
            assert response.body == b"alpha,beta,gamma"
        assert conn.buf == b""


def test_no_length_on_http10_ends_with_close(transport, streaming):
    with transport.connect(streaming) as conn:
        conn.send(request_bytes("GET", "/nolength", "HTTP/1.0",
                                (("Connection", "keep-alive"),)))
        response = conn.read_response()  # no length, no chunking: reads to EOF
        assert response.status == 200
        assert response.header("Transfer-Encoding") is None
        assert response.header("Content-Length") is None
        assert response.header("Connection") != "keep-alive"
        assert response.body == b"alpha,beta,gamma"
        assert conn.eof
        # Over TLS, only a closure alert before the close tells this body from
        # a truncated one (RFC 9112 9.8).
        assert not conn.unclean_close


def test_write_callable(transport, streaming):
    response = transport.request(streaming, "GET", "/write")
    assert response.status == 200
    assert response.body == b"written-1,written-2,returned"
    with transport.connect(streaming) as conn:
        conn.send(request_bytes("GET", "/write", "HTTP/1.0"))
        response = conn.read_response()
        assert response.body == b"written-1,written-2,returned"
        assert conn.eof and not conn.unclean_close


def test_iterable_closed_after_a_complete_response(transport, streaming):
    mark = streaming.stderr.mark()
    response = transport.request(streaming, "GET", "/tracked?token=full&chunks=3")
    assert response.body == b"x" * 3 * 16384
    streaming.stderr.wait_for(r"CLOSED full sent=3 finished=True", timeout=5, start=mark)


def test_iterable_closed_when_client_disconnects_mid_stream(transport, streaming):
    mark = streaming.stderr.mark()
    conn = transport.connect(streaming)
    # 10000 chunks 10 ms apart would take 100 s: the client leaves long before.
    conn.send(request_bytes("GET", "/tracked?token=gone&chunks=10000&delay=0.01"))
    response = conn.read_head()
    assert response.status == 200 and response.header("Transfer-Encoding") == "chunked"
    deadline = time.monotonic() + 5
    while len(conn.buf) < 5 * 16384:  # the stream is flowing
        assert conn._fill(deadline)
    # Abort (RST), so the server's next send fails at once.
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    match = streaming.stderr.wait_for(r"CLOSED gone sent=(\d+) finished=(\w+)", timeout=10,
                                      start=mark)
    assert match.group(2) == "False"
    assert int(match.group(1)) < 10000
    # The shard is fine, and a client leaving is not an application error.
    assert transport.request(streaming, "GET", "/nolength").body == b"alpha,beta,gamma"
    assert "Error handling request" not in streaming.stderr.since(mark)


def test_file_wrapper_sends_the_file(transport, streaming, data_file):
    expected = data_file.read_bytes()
    response = transport.request(streaming, "GET", "/file", timeout=10)
    assert response.status == 200
    if transport.name == "tls":
        # sendfile would write around the encryption: the file is iterated and
        # framed as the application left it, without a length (chunked).
        assert response.header("Content-Length") is None
        assert response.chunked
    else:
        assert response.header("Content-Length") == str(len(expected))
        assert response.header("Transfer-Encoding") is None
    assert len(response.body) == len(expected)
    assert hashlib.sha256(response.body).digest() == hashlib.sha256(expected).digest()
    # Twice on one keep-alive connection, then HEAD: same length, no body.
    with transport.connect(streaming, timeout=10) as conn:
        conn.send(request_bytes("GET", "/file") + request_bytes("HEAD", "/file")
                  + request_bytes("GET", "/nolength"))
        response = conn.read_response()
        assert response.body == expected
        head = conn.read_response("HEAD")
        assert head.status == 200
        assert head.header("Content-Length") in (str(len(expected)), None)
        assert conn.read_response().body == b"alpha,beta,gamma"


@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.parametrize("body", ["list", "gen", "stray", "file"])
def test_bodiless_status_gets_no_length_and_no_body(transport, streaming, status, body):
    """RFC 9110 8.6: no Content-Length on a 204; on a 304 only the 200's real
    length. The server must not invent one, nor send a body."""
    with transport.connect(streaming) as conn:
        conn.send(request_bytes("GET", f"/status/{status}?body={body}")
                  + request_bytes("GET", "/nolength"))
        response = conn.read_head()
        assert response.status == status
        assert response.header("ETag") == '"v1"'
        assert response.header("Content-Length") is None, response.headers
        assert response.header("Transfer-Encoding") is None
        assert conn.buf == b"" or conn.buf.startswith(b"HTTP/1.1 200 "), conn.buf[:80]
        assert conn.read_response().body == b"alpha,beta,gamma"
