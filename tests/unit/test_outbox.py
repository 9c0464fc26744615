"""The outbox's batching rules, over ``socket.socketpair()`` in this one gevent process.

Several connections share one ``Outbox``, as a shard's do. The test sends
requests on all their client ends before it yields, so the loop finds every
server end readable in the same pass: the small whole responses of that pass
must be held and sent by one flush after the last application returned. A
connection alone must send at once. ``RecordingOutbox`` notes what each
flush found held and what it left (a partial write) or met (an error).
"""

from __future__ import annotations

import select
import socket
import tempfile
import time
from collections.abc import Callable, Iterator

import gevent
import pytest
from gevent import socket as gsocket

from gshard.http.connection import BATCH_LIMIT, HOLD_TIME, Connection, Outbox
from gshard.http.context import Lifecycle, ServeContext
from gshard.http.exchange import Exchange, Outcome
from gshard.http.protocol import Limits
from gshard.http.wsgi import base_environ
from tests.support.rawhttp import Conn, request_bytes

pytestmark = pytest.mark.timeout(10)


class RecordingOutbox(Outbox):
    """An outbox that records, per flush, each held connection's (bytes held before,
    bytes still held after, whether the send failed)."""

    def __init__(self) -> None:
        super().__init__(gevent.get_hub().loop)
        self.flushes: list[list[tuple[int, int, bool]]] = []

    def flush(self) -> None:
        waiting = list(self.waiting)
        before = [len(conn.held or b"") for conn in waiting]
        super().flush()
        self.flushes.append([(held, len(conn.held or b""), conn.failure is not None)
                             for held, conn in zip(before, waiting, strict=True)])


class Shard:
    """``count`` connections serving socket pairs, sharing one context and outbox."""

    def __init__(self, app: Callable, count: int, sndbuf: int | None = None) -> None:
        self.outbox = RecordingOutbox()
        self.finished: list[Exchange] = []
        self.lifecycle = Lifecycle()
        self.ctx = ServeContext(
            app=app, base_environ=base_environ("localhost", "80", "http", False),
            limits=Limits(), keepalive=2.0, header_timeout=2.0, body_timeout=2.0,
            lifecycle=self.lifecycle, finished=(self.finished.append,), outbox=self.outbox,
        )
        self.clients: list[Conn] = []
        self.greenlets: list[gevent.Greenlet] = []
        for n in range(count):
            server, client = gsocket.socketpair()
            if sndbuf is not None:
                server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            self.clients.append(Conn(client, timeout=3.0))
            connection = Connection(server, ("10.0.0.7", str(5000 + n)), self.ctx)
            self.greenlets.append(gevent.spawn(connection.serve))
        gevent.sleep(0)  # every connection starts and waits for its first request

    def waiting_clients(self) -> list[int]:
        """Which clients have bytes to read now (without yielding to the loop)."""
        socks = [client.sock for client in self.clients]
        readable, _, _ = select.select(socks, [], [], 0)
        return [socks.index(sock) for sock in readable]

    def close(self) -> None:
        for client in self.clients:
            client.close()
        gevent.killall(self.greenlets)


@pytest.fixture
def shard() -> Iterator[Callable[..., Shard]]:
    made: list[Shard] = []

    def make(app: Callable, count: int, **kwargs) -> Shard:
        made.append(Shard(app, count, **kwargs))
        return made[-1]

    yield make
    for one in made:
        one.close()


def sized(environ, start_response):
    """``/NAME?SIZE``: a body of SIZE bytes (default: just NAME) that starts with NAME."""
    name = environ["PATH_INFO"].encode()
    size = int(environ["QUERY_STRING"] or len(name))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [name + b"." * (size - len(name))]


def test_responses_of_one_pass_go_out_together_after_every_application_ran(shard):
    seen: list[list[int]] = []

    def app(environ, start_response):
        seen.append(batch.waiting_clients())
        return sized(environ, start_response)

    batch = shard(app, 3)
    for n, client in enumerate(batch.clients):
        client.send(request_bytes("GET", f"/c{n}"))
    bodies = [client.read_response().body for client in batch.clients]
    assert bodies == [b"/c0", b"/c1", b"/c2"]
    # While the pass ran, no response had gone out: each application ran first.
    assert seen == [[], [], []]
    [flush] = batch.outbox.flushes  # one flush sent all three, whole
    assert len(flush) == 3
    assert all(held > 0 and left == 0 and not failed for held, left, failed in flush)


def test_a_connection_alone_sends_at_once(shard):
    batch = shard(sized, 1)
    client = batch.clients[0]
    for n in range(3):
        client.send(request_bytes("GET", f"/alone{n}"))
        assert client.read_response().body == f"/alone{n}".encode()
    assert batch.outbox.flushes == []


def test_pipelined_responses_append_to_what_is_held_in_order(shard):
    batch = shard(sized, 2)
    first, second = batch.clients
    first.send(b"".join(request_bytes("GET", f"/p{n}") for n in range(3)))
    second.send(request_bytes("GET", "/other"))
    assert [first.read_response().body for _ in range(3)] == [b"/p0", b"/p1", b"/p2"]
    assert second.read_response().body == b"/other"
    [flush] = batch.outbox.flushes
    assert len(flush) == 2  # the three responses of the first connection are one held write


@pytest.mark.parametrize("middle", [
    pytest.param(f"/large?{BATCH_LIMIT + 1}", id="larger than the limit"),
    pytest.param("/stream", id="streamed"),
    pytest.param("/file", id="sendfile"),
])
def test_a_send_that_is_not_held_sends_what_is_held_first(shard, middle):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/stream":
            start_response("200 OK", [])
            return (piece for piece in (b"/stream", b"-more", b"-end"))
        if environ["PATH_INFO"] == "/file":
            handle = tempfile.TemporaryFile()  # noqa: SIM115 (the server closes it)
            handle.write(b"/file" + b"f" * 20000)
            handle.seek(0)
            start_response("200 OK", [])
            return environ["wsgi.file_wrapper"](handle)
        return sized(environ, start_response)

    batch = shard(app, 2)
    first, second = batch.clients
    first.send(request_bytes("GET", "/before") + request_bytes("GET", middle)
               + request_bytes("GET", "/after"))
    second.send(request_bytes("GET", "/other"))
    responses = [first.read_response() for _ in range(3)]
    assert responses[0].body == b"/before"
    assert responses[1].body.startswith(middle.split("?")[0].encode())
    assert responses[2].body == b"/after"
    assert second.read_response().body == b"/other"
    assert all(response.complete for response in responses)
    [flush] = batch.outbox.flushes
    assert len(flush) == 2  # "/before" (or "/after") was held, and "/other"


def test_a_partial_write_is_finished_by_the_connection_itself(shard):
    size = BATCH_LIMIT - 1000
    batch = shard(sized, 2, sndbuf=4096)  # the kernel doubles it: 8 KiB
    first, second = batch.clients
    first.send(request_bytes("GET", f"/big?{size}"))
    second.send(request_bytes("GET", "/small"))
    gevent.sleep(0.1)  # the flush ran; nobody read yet
    [flush] = batch.outbox.flushes
    assert max(held for held, _, _ in flush) > size  # the large response was held
    # The socket's buffer took part of it...
    assert len(first.sock.recv(65536, socket.MSG_PEEK)) < size
    # ...and the connection, parked for its next request, was woken to send the rest.
    response = first.read_response()
    assert len(response.body) == size and response.body.startswith(b"/big")
    assert second.read_response().body == b"/small"
    first.send(request_bytes("GET", "/next"))  # and it still serves
    assert first.read_response().body == b"/next"


def test_a_flush_that_fails_ends_the_connection(shard):
    batch = shard(sized, 2)
    gone, second = batch.clients
    gone.send(request_bytes("GET", "/gone"))
    gone.close()  # before the server even read the request
    second.send(request_bytes("GET", "/stays"))
    assert second.read_response().body == b"/stays"
    batch.greenlets[0].join(3)
    assert batch.greenlets[0].dead  # the failed held write ended its connection
    [flush] = batch.outbox.flushes
    assert [failed for _, _, failed in flush].count(True) == 1


def test_an_error_of_a_held_write_surfaces_on_the_next_send(shard):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            gevent.sleep(0.1)  # the flush runs meanwhile, and fails
        return sized(environ, start_response)

    batch = shard(app, 2)
    gone, second = batch.clients
    gone.send(request_bytes("GET", "/first") + request_bytes("GET", "/slow"))
    gone.close()
    second.send(request_bytes("GET", "/other"))
    assert second.read_response().body == b"/other"
    batch.greenlets[0].join(3)
    assert batch.greenlets[0].dead
    outcomes = {e.request.target: e.outcome for e in batch.finished}
    assert outcomes["/first"] is Outcome.COMPLETE  # held: it ended before the failure
    assert outcomes["/slow"] is Outcome.CLIENT_GONE  # its send raised the flush's error


def test_a_closing_response_is_not_held_and_goes_out_after_what_is(shard):
    batch = shard(sized, 2)
    closing, second = batch.clients
    closing.send(request_bytes("GET", "/first")
                 + request_bytes("GET", "/last", headers=(("Connection", "close"),)))
    second.send(request_bytes("GET", "/other"))
    assert closing.read_response().body == b"/first"
    response = closing.read_response()
    assert response.body == b"/last" and response.header("Connection") == "close"
    assert closing.wait_closed()
    assert second.read_response().body == b"/other"
    # "/first" was held, then sent by its connection before the closing response, which
    # it never held: by the flush, that connection held nothing.
    [flush] = batch.outbox.flushes
    assert sorted(held == 0 for held, _, _ in flush) == [False, True]


def test_a_drain_sends_what_is_held_before_closing(shard):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/b":
            batch.lifecycle.draining = True  # SIGTERM arrived while responses are held
        return sized(environ, start_response)

    batch = shard(app, 3)
    for n, client in enumerate(batch.clients):
        client.send(request_bytes("GET", f"/a{n}") + request_bytes("GET", "/b"))
    for n, client in enumerate(batch.clients):
        # Each gets its first response, then (unless the drain had begun by then) the
        # second; the last one it gets closes the connection. Nothing held is lost.
        responses = [client.read_response()]
        if responses[0].header("Connection") != "close":
            responses.append(client.read_response())
        assert [r.body for r in responses] == [f"/a{n}".encode(), b"/b"][:len(responses)]
        assert responses[-1].header("Connection") == "close"
        assert client.wait_closed()
    [flush] = batch.outbox.flushes  # the first "/aN" was held, and sent before "/b"
    assert [held for held, _, _ in flush] == [0]


def test_a_flush_outside_the_loop_sends_what_is_held_once(shard):
    """A shard that quits flushes its outbox itself before it exits
    (``ShardServer.serve``): it may stop before the loop runs the flush."""
    batch = shard(sized, 2)
    seen: list[list[int]] = []

    def exiting() -> None:  # runs after the pass, before the flush it scheduled
        seen.append(batch.waiting_clients())
        batch.outbox.flush()
        seen.append(batch.waiting_clients())

    def app(environ, start_response):
        if not seen and not scheduled:  # the pass's first application
            scheduled.append(gevent.get_hub().loop.run_callback(exiting))
        return sized(environ, start_response)

    scheduled: list = []

    batch.ctx.app = app
    first, second = batch.clients
    first.send(request_bytes("GET", "/x"))
    second.send(request_bytes("GET", "/y"))
    assert first.read_response().body == b"/x"
    assert second.read_response().body == b"/y"
    assert seen == [[], [0, 1]]
    # The loop's own flush found nothing left: each response went out once.
    for client, path in ((first, "/x2"), (second, "/y2")):
        client.send(request_bytes("GET", path))
        assert client.read_response().body == path.encode()


def test_a_pass_of_slow_applications_still_sends_every_hold_time(shard):
    seen: list[list[int]] = []

    def slow(environ, start_response):
        seen.append(batch.waiting_clients())
        time.sleep(HOLD_TIME * 1.5)  # CPU-bound as far as the loop can tell
        return sized(environ, start_response)

    batch = shard(slow, 4)
    for n, client in enumerate(batch.clients):
        client.send(request_bytes("GET", f"/s{n}"))
    bodies = [client.read_response().body for client in batch.clients]
    assert bodies == [b"/s0", b"/s1", b"/s2", b"/s3"]
    # The first response was held while the second application ran; by the third,
    # it had waited HOLD_TIME, and it went out (with the second) before that ran.
    assert [len(found) for found in seen[:3]] == [0, 0, 2]
    # The early flush, then the loop's (a callback left with nothing to send may follow).
    assert [len(flush) for flush in batch.outbox.flushes if flush] == [2, 2]
