"""``Connection`` driven over ``socket.socketpair()`` in this one gevent process.

No server process and no network: the connection serves one end of a
gevent socket pair in a greenlet, the test talks on the other end with the
strict raw client, and every finished ``Exchange`` is recorded through
``ServeContext.finished``, the way the access log reads it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator

import gevent
import pytest
from gevent import socket as gsocket

from gshard.errors import ClientDisconnected, ProtocolError
from gshard.http.connection import Connection
from gshard.http.context import Lifecycle, ServeContext
from gshard.http.exchange import Exchange, Outcome
from gshard.http.protocol import Limits
from gshard.http.wsgi import base_environ
from gshard.shard.serving import _close_idle
from tests.support.rawhttp import Closed, Conn, request_bytes

pytestmark = pytest.mark.timeout(10)


class Served:
    """A connection serving the server end of a socket pair; the test holds the client end."""

    def __init__(self, app: Callable, **settings: float) -> None:
        server, client = gsocket.socketpair()
        self.finished: list[Exchange] = []
        self.lifecycle = Lifecycle()
        self.ctx = ServeContext(
            app=app,
            base_environ=base_environ("localhost", "80", "http", False),
            limits=Limits(),
            keepalive=settings.get("keepalive", 2.0),
            header_timeout=settings.get("header_timeout", 2.0),
            body_timeout=settings.get("body_timeout", 2.0),
            lifecycle=self.lifecycle,
            finished=(self.finished.append,),
        )
        self.server_sock = server
        self.client = Conn(client, timeout=3.0)
        self.greenlet = gevent.spawn(Connection(server, ("10.0.0.7", "5555"), self.ctx).serve)

    def ended(self, timeout: float = 3.0) -> bool:
        """Whether the connection's greenlet has finished (its socket closed)."""
        self.greenlet.join(timeout)
        return self.greenlet.dead

    def close(self) -> None:
        self.client.close()
        self.greenlet.kill()


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def make(app: Callable, **settings: float) -> Served:
        served = Served(app, **settings)
        made.append(served)
        return served

    yield make
    for served in made:
        served.close()


def hello(environ, start_response):
    body = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def test_keep_alive_serves_requests_in_turn_and_records_each(serve):
    served = serve(hello)
    for path in ("/one", "/two"):
        served.client.send(request_bytes("GET", path))
        response = served.client.read_response()
        assert (response.status, response.body) == (200, f"GET {path}".encode())
        assert response.header("Content-Length") == str(len(response.body))
        assert response.header("Connection") is None
    assert not served.ended(0.1)
    first, second = served.finished
    assert (first.request.method, first.request.target, first.status) == ("GET", "/one", "200 OK")
    assert (first.sent, first.body_bytes, first.outcome) == (8, 0, Outcome.COMPLETE)
    assert first.duration > 0 and second.started >= first.started
    assert ("Content-Length", "8") in first.response_headers
    assert served.lifecycle.handled == 2


def test_pipelined_requests_are_answered_in_order(serve):
    served = serve(echo)
    last = request_bytes("POST", "/c", body=b"third", headers=(("Connection", "close"),))
    served.client.send(request_bytes("POST", "/a", body=b"first") + request_bytes("GET", "/b")
                       + last)
    bodies = [served.client.read_response().body for _ in range(3)]
    assert bodies == [b"first", b"", b"third"]
    assert served.client.wait_closed()
    assert [e.body_bytes for e in served.finished] == [5, 0, 5]


def test_100_continue_is_sent_when_the_application_reads(serve):
    served = serve(echo)
    served.client.send(request_bytes(
        "POST", "/", headers=(("Content-Length", "5"), ("Expect", "100-continue"))))
    interim = served.client.read_head()
    assert interim.status == 100
    served.client.send(b"hello")
    response = served.client.read_response()
    assert (response.status, response.body) == (200, b"hello")
    assert response.header("Connection") is None  # the body was read: the connection stays


def test_no_100_continue_when_the_application_does_not_read(serve):
    def refuse(environ, start_response):
        start_response("413 Content Too Large", [("Content-Length", "0")])
        return [b""]

    served = serve(refuse)
    served.client.send(request_bytes(
        "POST", "/", headers=(("Content-Length", "5"), ("Expect", "100-continue"))))
    response = served.client.read_response()
    assert response.status == 413
    # The client may or may not send the body now: only a close is safe.
    assert response.header("Connection") == "close"
    assert served.client.wait_closed()


def test_head_gets_the_length_without_the_body(serve):
    served = serve(hello)
    served.client.send(request_bytes("HEAD", "/x") + request_bytes("GET", "/y"))
    head = served.client.read_response("HEAD")
    assert head.header("Content-Length") == str(len(b"HEAD /x"))  # what the app would send
    assert head.body == b""
    assert served.client.read_response().body == b"GET /y"


def test_an_exception_before_the_head_is_a_500_and_a_close(serve, caplog):
    def broken(environ, start_response):
        raise RuntimeError("the database is down")

    served = serve(broken)
    served.client.send(request_bytes("GET", "/boom"))
    response = served.client.read_response()
    assert response.status == 500
    assert response.header("Connection") == "close"
    assert served.client.wait_closed()
    assert "Error handling request GET /boom" in caplog.text
    assert "the database is down" in caplog.text
    assert served.finished[0].status == "500 Internal Server Error"


def test_an_exception_after_the_head_cuts_the_response_short(serve):
    def streaming(environ, start_response):
        start_response("200 OK", [])
        yield b"partial"
        raise RuntimeError("mid-stream")

    served = serve(streaming)
    served.client.send(request_bytes("GET", "/"))
    response = served.client.read_response()
    assert response.chunked and not response.complete
    assert response.body == b"partial"
    assert served.ended()
    assert served.finished[0].outcome is Outcome.ABORTED


def test_a_client_gone_mid_body_ends_the_exchange_quietly(serve):
    seen = []

    def reader(environ, start_response):
        try:
            environ["wsgi.input"].read()
        except (ProtocolError, ClientDisconnected) as exc:
            seen.append(exc)
            raise
        start_response("200 OK", [])
        return [b"unreachable"]

    served = serve(reader)
    served.client.send(request_bytes("POST", "/", headers=(("Content-Length", "100"),))
                       + b"only ten..")
    gevent.sleep(0.05)
    served.client.sock.shutdown(gsocket.SHUT_WR)
    assert served.client.wait_closed()
    assert served.ended()
    assert len(seen) == 1 and served.finished[0].outcome is Outcome.CLIENT_GONE
    assert served.finished[0].body_bytes == 10


def test_a_head_not_received_in_time_gets_408(serve):
    served = serve(hello, header_timeout=0.2)
    served.client.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
    started = time.monotonic()
    response = served.client.read_response()
    assert response.status == 408
    assert time.monotonic() - started < 2
    assert served.client.wait_closed()
    assert served.finished == []


def test_a_stalled_body_gets_408(serve):
    served = serve(echo, body_timeout=0.2)
    served.client.send(request_bytes("POST", "/", headers=(("Content-Length", "10"),)) + b"abc")
    response = served.client.read_response()
    assert response.status == 408
    assert served.client.wait_closed()


def test_an_idle_connection_parks_for_the_reaper(serve):
    served = serve(hello)
    served.client.send(request_bytes("GET", "/"))
    served.client.read_response()
    deadline = time.monotonic() + 2
    while not served.lifecycle.idle and time.monotonic() < deadline:
        gevent.sleep(0.01)
    [parked] = served.lifecycle.idle
    _close_idle(parked, served.lifecycle.idle)  # what the shard's reaper does past --keep-alive
    assert served.client.wait_closed()
    assert served.ended()


def test_a_draining_shard_closes_after_the_response(serve):
    served = serve(hello)
    served.lifecycle.draining = True
    served.client.send(request_bytes("GET", "/") + request_bytes("GET", "/never"))
    response = served.client.read_response()
    assert response.header("Connection") == "close"
    assert served.client.wait_closed()
    assert len(served.finished) == 1


def file_app(content: bytes, offset: int = 0) -> Callable:
    """An application answering with a ``wsgi.file_wrapper`` over ``content`` from ``offset``."""
    def app(environ, start_response):
        handle = tempfile.TemporaryFile()  # noqa: SIM115 (the server closes it, as PEP 3333 says)
        handle.write(content)
        handle.seek(offset)
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](handle)

    return app


def test_a_file_goes_out_with_sendfile_and_its_length(serve):
    served = serve(file_app(b"0123456789" * 1000, offset=5))
    served.client.send(request_bytes("GET", "/file"))
    response = served.client.read_response()
    assert response.header("Content-Length") == "9995"
    assert response.body == (b"0123456789" * 1000)[5:]
    assert served.finished[0].sent == 9995


def test_a_malformed_head_gets_400_and_a_close(serve, caplog):
    caplog.set_level(logging.INFO, logger="gunicorn.error")
    served = serve(hello)
    served.client.send(b"GET / HTTP/1.1\r\nHost: t\r\nBad Field: x\r\n\r\n")
    response = served.client.read_response()
    assert response.status == 400
    with pytest.raises((Closed, TimeoutError)):
        served.client.read_response(timeout=0.5)
    assert "Bad request from 10.0.0.7" in caplog.text


def test_a_malformed_body_the_application_left_unread_is_logged_and_closes(serve, caplog):
    caplog.set_level(logging.INFO, logger="gunicorn.error")
    served = serve(hello)  # answers without reading the body
    served.client.send(b"POST /noread HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"3\r\nabc\r\nzz\r\n")
    assert served.client.read_response().status == 200
    assert served.ended()
    assert "Bad request from 10.0.0.7" in caplog.text
    assert "left unread" in caplog.text


def test_no_sendfile_reads_the_file_instead(serve):
    served = serve(file_app(b"abc" * 1000))
    served.ctx.sendfile = False
    served.client.send(request_bytes("GET", "/file"))
    response = served.client.read_response()
    # Iterated, not sent by the kernel: no length known before the head.
    assert response.chunked and response.body == b"abc" * 1000


def test_a_finished_exchange_is_freed_without_the_cyclic_collector(serve):
    """start_response's write() and wsgi.input point back at their exchange; the
    exchange cuts those links when it ends, or each request would leave a cycle
    for the garbage collector to find (a collection every ~50 requests)."""
    import gc

    served = serve(echo)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for body in (b"", b"a body", b""):
            served.client.send(request_bytes("POST", "/freed", body=body))
            assert served.client.read_response().body == body
        assert len(served.finished) == 3
        served.finished.clear()  # the connection's last reference to them
        gc.collect()
        # Earlier tests' killed connections may be collected here too: look for ours.
        left = [o for o in gc.garbage if isinstance(o, Exchange) and o.request.target == "/freed"]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []
