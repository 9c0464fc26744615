"""Many clients at once, so that a shard's loop finds several connections ready in
one pass and holds their small responses for one flush (``connection.Outbox``).

Every response is checked byte for byte (``batch_app`` bodies name their request
and follow a pattern), in order, whole: holding must never cut, mix or reorder a
response, whatever the transport (TLS keeps its own path), the size (past
``BATCH_LIMIT`` a response is sent at once, after what its connection holds) or
the shape (streamed, ``write()``, a framework's one-item iterable). Clients that
vanish mid-conversation must cost the others nothing, and the counters of
``gshard status`` count every response. Recycling (``--max-requests``) and a
reload drain shards while responses are held: none may be lost.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest

from gshard.http.connection import BATCH_LIMIT
from tests.fixtureapps.batch_app import body
from tests.support.processes import Server, status_document, wait_until
from tests.support.rawhttp import Conn, request_bytes

SIZES = (0, 14, 900, BATCH_LIMIT - 300, BATCH_LIMIT + 100, 70_000)
KINDS = ("list", "list", "list", "iter", "iter", "chunked", "write", "sleep")


def _path(name: str, size: int, kind: str) -> str:
    return f"{name}?size={size}&kind={kind}"


def _check(response, name: str, size: int) -> str | None:
    """What is wrong with ``response`` to ``name`` (None: it is whole and its own)."""
    if response.status != 200:
        return f"{name}: status {response.status}"
    if not response.complete:
        return f"{name}: cut short at {len(response.body)} bytes"
    if response.body != body(name.encode(), size):
        return f"{name}: body {response.body[:60]!r}... ({len(response.body)} bytes)"
    return None


class Conversation:
    """One client: rounds of 1-3 pipelined requests on a keep-alive connection, each
    response checked as it arrives; a ``Connection: close`` answer makes it
    reconnect and send again what was not answered (as a client does)."""

    def __init__(self, connect: Callable[[], Conn], name: str, rounds: int,
                 seed: int, sizes: tuple[int, ...] = SIZES, seconds: float = 30.0) -> None:
        self.connect = connect
        self.name = name
        self.rounds = rounds
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.sizes = sizes
        self.problems: list[str] = []
        self.answered = 0
        self.body_bytes = 0
        self.reconnects = 0

    def run(self) -> None:
        conn = self.connect()
        deadline = time.monotonic() + self.seconds
        try:
            for n in range(self.rounds):
                if time.monotonic() > deadline:
                    return
                pending = [(f"/{self.name}/{n}/{i}", self.rng.choice(self.sizes),
                            self.rng.choice(KINDS)) for i in range(self.rng.randint(1, 3))]
                while pending:
                    conn.send(b"".join(request_bytes("GET", _path(*p)) for p in pending))
                    while pending:
                        name, size, _kind = pending[0]
                        response = conn.read_response()
                        problem = _check(response, name, size)
                        if problem:
                            self.problems.append(problem)
                            return
                        pending.pop(0)
                        self.answered += 1
                        self.body_bytes += len(response.body)
                        if response.header("Connection") == "close":
                            assert conn.wait_closed(), f"{name}: not closed after close"
                            conn.close()
                            conn = self.connect()
                            self.reconnects += 1
                            break
        except Exception as exc:  # a reset, a timeout, a close without an answer
            self.problems.append(f"{self.name}: {type(exc).__name__}: {exc}")
        finally:
            conn.close()


def vanish(connect: Callable[[], Conn], name: str, seed: int) -> None:
    """A client that asks for several responses and leaves before reading them all:
    closing, or resetting (SO_LINGER 0), after none, part of one or one response."""
    rng = random.Random(seed)
    for n in range(6):
        conn = connect()
        try:
            conn.send(b"".join(request_bytes("GET", _path(f"/{name}/{n}/{i}",
                                                          rng.choice(SIZES), rng.choice(KINDS)))
                               for i in range(3)))
            how = n % 3
            if how == 1:
                conn.sock.recv(100)
            elif how == 2:
                conn.read_response()
            if n % 2:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
        except (OSError, AssertionError):
            pass  # a TLS client may fail mid-handshake or mid-record: it is leaving anyway
        finally:
            conn.close()


def converse(connect: Callable[[], Conn], clients: int, rounds: int, vanishing: int = 0,
             sizes: tuple[int, ...] = SIZES, seconds: float = 30.0) -> list[Conversation]:
    """``clients`` conversations of ``rounds`` rounds (or ``seconds``) each, and
    ``vanishing`` clients that leave early, all at once."""
    conversations = [Conversation(connect, f"c{n}", rounds, seed=n, sizes=sizes,
                                  seconds=seconds) for n in range(clients)]
    threads = [threading.Thread(target=c.run) for c in conversations]
    threads += [threading.Thread(target=vanish, args=(connect, f"v{n}", n))
                for n in range(vanishing)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    assert not any(thread.is_alive() for thread in threads), "a client hung"
    return conversations


def problems(conversations: list[Conversation]) -> list[str]:
    return [p for c in conversations for p in c.problems]


def assert_clean_log(server: Server, since: int = 0) -> None:
    bad = [line for line in server.stderr.since(since).splitlines()
           if "Traceback" in line or "[ERROR]" in line or "[CRITICAL]" in line]
    assert not bad, bad[:5]


@pytest.mark.timeout(90)
def test_every_response_arrives_whole_and_in_order_with_many_clients(transport, shared_gshard):
    server = shared_gshard("batch_app:app", "--shards", "2")
    mark = server.stderr.mark()
    clients, rounds = (16, 10) if transport.name == "tls" else (32, 15)
    conversations = converse(lambda: transport.connect(server), clients, rounds, vanishing=6)
    assert problems(conversations) == []
    assert sum(c.answered for c in conversations) >= clients * rounds
    # The server still serves, and said nothing alarming about the clients that left.
    with transport.connect(server) as conn:
        conn.send(request_bytes("GET", _path("/after", 900, "list")))
        assert _check(conn.read_response(), "/after", 900) is None
    assert_clean_log(server, since=mark)



@pytest.mark.timeout(90)
def test_status_counts_every_held_response_and_its_bytes(gshard_proc, tmp_path):
    pidfile = str(tmp_path / "gshard.pid")
    server = gshard_proc("batch_app:app", "--shards", "2", "--pid", pidfile)
    small = (0, 14, 900, 4000)  # every one of them may be held
    conversations = converse(lambda: Conn.tcp(server.port), clients=32, rounds=20, sizes=small)
    assert problems(conversations) == []
    requests = sum(c.answered for c in conversations)
    body_bytes = sum(c.body_bytes for c in conversations)
    totals = wait_until(
        lambda: (t := status_document("--pid", pidfile)["totals"])["requests"] >= requests and t,
        15, "every request counted")
    assert totals["requests"] == requests
    assert totals["responses"]["2xx"] == requests
    assert totals["bytes_out"] == body_bytes


@pytest.mark.timeout(120)
def test_recycling_and_a_reload_lose_no_held_response(gshard_proc, tmp_path):
    """Shards drain every few dozen requests (--max-requests) and the whole generation
    is replaced (SIGHUP) while 24 pipelining clients keep responses held."""
    server = gshard_proc("batch_app:app", "--shards", "2", "--max-requests", "60",
                         "--max-requests-jitter", "20", "--graceful-timeout", "10")
    mark = server.stderr.mark()
    done = threading.Event()
    reloads = 0

    def reload_midway() -> None:
        nonlocal reloads
        while not done.wait(1.0) and reloads < 2:
            os.kill(server.proc.pid, signal.SIGHUP)
            reloads += 1

    reloader = threading.Thread(target=reload_midway)
    reloader.start()
    try:
        started = time.monotonic()
        conversations = converse(lambda: Conn.tcp(server.port), clients=24, rounds=100_000,
                                 sizes=(14, 900, 4000, BATCH_LIMIT + 100), seconds=6.0)
    finally:
        done.set()
        reloader.join(10)
    assert problems(conversations) == []
    # Shards were drained under the clients, again and again: they had to reconnect.
    assert sum(c.reconnects for c in conversations) >= 24
    assert reloads >= 1, f"the load took only {time.monotonic() - started:.1f}s"
    log = server.stderr.since(mark)
    assert "Reloading: booting generation" in log and "Recycling shard" in log
    assert_clean_log(server, since=mark)
