"""Serving real applications: Flask, plain WSGI, a PEP 3333 validator, HEAD, Date/Server."""

from __future__ import annotations

import email.utils
import time

import pytest
import requests

from tests.support.rawhttp import Conn, request_bytes


def test_flask_app(gshard_proc):
    server = gshard_proc("flask_app:app", "--shards", "2")
    response = requests.get(server.url + "/", timeout=5)
    assert response.status_code == 200
    assert response.text == "flask says hi"
    response = requests.post(server.url + "/items/widget?colour=blue",
                             json={"size": 3, "tags": ["a", "b"]}, timeout=5)
    assert response.status_code == 201
    assert response.json() == {
        "name": "widget", "payload": {"size": 3, "tags": ["a", "b"]}, "args": {"colour": "blue"},
    }
    assert requests.get(server.url + "/missing", timeout=5).status_code == 404


def test_plain_wsgi_app(gshard_proc):
    server = gshard_proc("hello:app", "--shards", "1")
    with requests.Session() as session:
        for _ in range(3):
            response = session.get(server.url + "/any/path?q=1", timeout=5)
            assert response.status_code == 200
            assert response.content == b"hello\n"
            assert response.headers["Content-Length"] == "6"
            assert response.headers["Content-Type"] == "text/plain"


def test_validator_wrapped_app_finds_nothing_wrong(gshard_proc):
    server = gshard_proc("validated_app:app", "--shards", "1")
    with requests.Session() as session:  # keep-alive: several requests on one connection
        response = session.get(server.url + "/plain?x=1", timeout=5)
        assert (response.status_code, response.text) == (200, "GET /plain 0 b''\n")
        response = session.post(server.url + "/upload", data=b"z" * 70000, timeout=5)
        assert (response.status_code, response.text) == (200, "POST /upload 70000 b''\n")
        response = session.get(server.url + "/write", timeout=5)
        assert (response.status_code, response.text) == (200, "written:GET /write 0 b''\n")
        response = session.head(server.url + "/plain", timeout=5)
        assert response.status_code == 200
    # The validator reports a server that breaks PEP 3333 by raising (500 and
    # a traceback), by warning, or on stderr when an iterable is never closed.
    # Stop first so every shard's output is in.
    assert server.stop() == 0
    log = server.stderr.text
    for sign in ("Traceback", "AssertionError", "WSGIWarning", "garbage collected", "Error"):
        assert sign not in log, log


def test_head_has_headers_but_no_body(gshard_proc):
    server = gshard_proc("streaming:app", "--shards", "1")
    for path in ("/write", "/nolength"):
        with Conn.tcp(server.port) as conn:
            # HEAD then GET in one write: the GET's response must start right
            # after the HEAD response's head, with no body bytes in between.
            conn.send(request_bytes("HEAD", path) + request_bytes("GET", path))
            head = conn.read_response("HEAD")
            assert head.status == 200
            assert head.header("Content-Type") == "text/plain"
            assert conn.buf == b"" or conn.buf.startswith(b"HTTP/1.1 200 "), conn.buf[:100]
            get = conn.read_response("GET")
            assert get.status == 200
            assert get.body in (b"written-1,written-2,returned", b"alpha,beta,gamma")
            assert conn.buf == b""
    server2 = gshard_proc("hello:app", "--shards", "1")
    with Conn.tcp(server2.port) as conn:
        conn.send(request_bytes("HEAD", "/") + request_bytes("GET", "/"))
        head = conn.read_response("HEAD")
        assert head.header("Content-Length") == "6"
        assert conn.read_response().body == b"hello\n"


def test_date_and_server_headers(gshard_proc):
    server = gshard_proc("hello:app", "--shards", "1")
    before = time.time()
    response = requests.get(server.url + "/", timeout=5)
    after = time.time()
    assert response.headers["Server"] == "gshard"
    date = email.utils.parsedate_to_datetime(response.headers["Date"])
    assert response.headers["Date"].endswith(" GMT")
    assert before - 2 <= date.timestamp() <= after + 1


def test_access_log_line_per_response(gshard_proc, tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"d" * 100000)
    server = gshard_proc("streaming:app", "--shards", "1", "--access-logfile", "-",
                         env={"GSHARD_TEST_FILE": str(data)})
    with requests.Session() as session:
        for path in ("/nolength", "/write?x=1", "/file", "/nope"):
            session.get(server.url + path, headers={"User-Agent": "probe/1"}, timeout=5)
    expected = [
        r'"GET /nolength HTTP/1\.1" 200 16 "-" "probe/1"$',
        r'"GET /write\?x=1 HTTP/1\.1" 200 28 "-" "probe/1"$',
        r'"GET /file HTTP/1\.1" 200 100000 "-" "probe/1"$',
        r'"GET /nope HTTP/1\.1" 404 0 "-" "probe/1"$',  # gunicorn's b: 0, not -
    ]
    for pattern in expected:
        server.stdout.wait_for(r"^127\.0\.0\.1 - - \[[^]]+\] " + pattern, timeout=5)
    assert len(server.stdout.lines) == 4, server.stdout.text


@pytest.mark.parametrize("preload", [False, True], ids=["import-in-shard", "preload"])
def test_objects_made_by_the_import_are_frozen(gshard_proc, preload):
    """After the application's import a shard freezes what exists (gc.freeze), so
    full collections stop walking modules and classes; with --preload the
    template freezes before it forks, and its shards inherit that."""
    server = gshard_proc("gc_app:app", "--shards", "1", *(["--preload"] if preload else []))
    frozen = int(requests.get(server.url + "/", timeout=5).text)
    # gshard, gevent and the standard library alone are tens of thousands of objects.
    assert frozen > 10_000
