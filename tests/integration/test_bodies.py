"""Request bodies: large, chunked, 100-continue, and bodies the application never reads."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest
import requests

from tests.support.rawhttp import Closed, Conn, request_bytes

MIB = 1024 * 1024


@pytest.fixture
def echo(gshard_proc):
    return gshard_proc("echo:app", "--shards", "2")


def test_one_mib_post_with_content_length(echo):
    body = os.urandom(MIB)
    response = requests.post(echo.url + "/upload", data=body, timeout=10)
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["content_length"] == str(MIB)
    assert echoed["body_len"] == MIB
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_one_mib_post_chunked(echo):
    body = os.urandom(MIB)
    pieces = [body[i:i + 10000] for i in range(0, MIB, 10000)]  # uneven chunk sizes

    response = requests.post(echo.url + "/upload", data=iter(pieces), timeout=10)
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["headers"]["HTTP_TRANSFER_ENCODING"] == "chunked"
    assert echoed["content_length"] is None
    assert echoed["body_len"] == MIB
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_expect_100_continue_is_sent_when_the_app_first_reads(echo):
    body = b"0123456789" * 5000
    head = request_bytes("POST", "/upload?delay=0.5", headers=(
        ("Content-Length", str(len(body))), ("Expect", "100-continue")))
    with Conn.tcp(echo.port) as conn:
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


def test_expect_100_continue_not_sent_if_the_app_never_reads(echo):
    head = request_bytes("POST", "/noread", headers=(
        ("Content-Length", "100000"), ("Expect", "100-continue")))
    with Conn.tcp(echo.port) as conn:
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


def test_unread_small_body_is_skipped_and_the_connection_reused(echo):
    body = _smuggle_body(20000)
    with Conn.tcp(echo.port) as conn:
        conn.send(request_bytes("POST", "/noread", body=body) + request_bytes("GET", "/next"))
        first = conn.read_response()
        assert first.status == 200 and json.loads(first.body)["path"] == "/noread"
        second = conn.read_response()
        assert second.status == 200
        assert json.loads(second.body)["path"] == "/next"
        assert conn.wait_closed(timeout=0.5) is False  # still open, nothing else sent


@pytest.mark.timeout(30)
def test_unread_large_body_never_parsed_as_requests(echo):
    """1 MiB the app ignores: the server may drop the connection, but never
    answer the request-looking bytes inside the body."""
    body = _smuggle_body(MIB)
    with Conn.tcp(echo.port, timeout=10) as conn:
        errors = []

        def send_all():
            try:
                conn.send(request_bytes("POST", "/noread", body=body)
                          + request_bytes("GET", "/next"))
            except OSError as exc:  # the server may close before taking it all
                errors.append(exc)

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
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
        sender.join(timeout=10)
        assert not sender.is_alive()
    # Still serving.
    assert requests.get(echo.url + "/ok", timeout=5).json()["path"] == "/ok"


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n"


@pytest.mark.parametrize(("body", "args"), [
    pytest.param(b"zz\r\n0\r\n\r\n" + SMUGGLED, (), id="bad-chunk-size"),
    pytest.param(b"3\r\nabcXY0\r\n\r\n" + SMUGGLED, (), id="chunk-without-crlf"),
    pytest.param(b"%x\r\n" % 101 + b"0\r\n\r\n" + SMUGGLED + b"p" * (101 - 5 - len(SMUGGLED))
                 + b"\r\n0\r\n\r\n", ("--limit-request-body", "100"), id="chunk-over-limit"),
])
def test_broken_body_caught_by_the_app_ends_the_connection(gshard_proc, body, args):
    """Flask turns the error wsgi.input raises into its own 500. The server must
    still drop the connection: the bytes after a framing error are not requests."""
    server = gshard_proc("flask_app:app", "--shards", "1", *args)
    with Conn.tcp(server.port) as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + body)
        response = conn.read_response()
        assert response.status >= 400
        assert response.header("Connection") == "close"
        assert conn.wait_closed(timeout=5), "the connection stayed open"
    # The server itself is fine.
    assert requests.get(server.url + "/smuggled", timeout=5).status_code == 200
