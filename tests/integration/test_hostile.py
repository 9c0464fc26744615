"""Hostile clients against real servers: slowloris, endless heads, floods of
garbage, stalled bodies, overload, oversized bodies and request smuggling.

Every client is bounded: each socket has a timeout, each loop a deadline and a
count, and everything stays on 127.0.0.1. The measurements (latency under
slowloris, RSS before and after a flood) are printed; ``pytest -s`` shows them.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import select
import selectors
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.processes import (
    START_TIMEOUT,
    Server,
    kill_group,
    launch,
    need_descriptors,
    process_state,
)
from tests.support.rawhttp import Conn, fetch, garbage, read_to_eof, request_bytes

REFUSALS = {400, 408, 413, 414, 417, 431, 501, 505}


def ready(socks: list[socket.socket], timeout: float) -> list[int]:
    """Descriptors among ``socks`` with something to read (or closed); poll, as
    select() cannot watch descriptors past 1023."""
    poller = select.poll()
    for sock in socks:
        poller.register(sock, select.POLLIN)
    return [fd for fd, _ in poller.poll(timeout * 1000)]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def timed_get(port: int, path: str = "/") -> tuple[float, int]:
    """Seconds from connect to the whole response of a fresh GET, and its status."""
    started = time.perf_counter()
    status = fetch(port, path).status
    return time.perf_counter() - started, status


@pytest.fixture(scope="module")
def shared() -> Iterator[Server]:
    """One server for the quick refusal tests (two shards, a 1000-byte body limit)."""
    server = launch("hostile_app:app", "--bind", "127.0.0.1:0", "--shards", "2",
                    "--limit-request-body", "1000")
    try:
        yield server.wait_ready()
    finally:
        kill_group(server)


# --- slowloris ---------------------------------------------------------------------------

SLOWLORIS = 1000


@pytest.mark.timeout(60)
def test_slowloris_does_not_delay_others_and_is_cut_at_header_timeout(gshard_proc):
    """1,000 connections hold partial heads (some silent, some trickling a byte
    every 0.3 s): each of 10 normal requests is answered within 100 ms (a few
    ms here), and with --header-timeout 2 the server closes every held
    connection (408) by ~3 s.

    Two shards of 1,000 --worker-connections each: the held connections take
    half the slots. Holding more than shards x worker-connections would make
    new clients wait in the accept queue until --header-timeout frees slots.
    """
    need_descriptors(SLOWLORIS + 256)
    server = gshard_proc("hostile_app:app", "--shards", "2", "--header-timeout", "2")
    assert timed_get(server.port)[1] == 200
    partials = [b"G", b"GET / HT", b"GET / HTTP/1.1\r\nHost: a\r\nX-Drip: "]
    socks: list[socket.socket] = []
    opened: dict[socket.socket, float] = {}
    try:
        for i in range(SLOWLORIS):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(partials[i % len(partials)])
            opened[sock] = time.monotonic()
            socks.append(sock)
        all_open = time.monotonic()
        tricklers = socks[1::2]
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.3):
                for sock in tricklers:
                    with contextlib.suppress(OSError):
                        sock.send(b"a")

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        try:
            # A request that arrives with the burst waits behind it in the accept
            # queue (30-60 ms here); once the shards have taken the held
            # connections in, they must not slow anyone down.
            in_burst, status = timed_get(server.port)
            assert status == 200 and in_burst < 1.0
            time.sleep(0.3)
            latencies = []
            for _ in range(10):
                latency, status = timed_get(server.port)
                assert status == 200
                latencies.append(latency)
                time.sleep(0.02)
            measured_by = time.monotonic()
            # Every held connection was still open while those were served.
            answered = ready(socks, 0)
            assert not answered, f"{len(answered)} held connections already answered or closed"
            assert measured_by - opened[socks[0]] < 2.0, "the measurement outlasted the timeout"
            closed_after, answers = _wait_all_closed(socks, opened, deadline=all_open + 6)
        finally:
            stop.set()
            thread.join(timeout=5)
    finally:
        for sock in socks:
            sock.close()
    print(f"\nslowloris: {SLOWLORIS} held; a GET in the burst {in_burst * 1000:.1f} ms, then "
          f"latency median "
          f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms; "
          f"held connections closed after {min(closed_after.values()):.2f}-"
          f"{max(closed_after.values()):.2f} s, answers {dict(answers)}")
    assert max(latencies) < 0.1, [f"{x * 1000:.1f} ms" for x in latencies]
    assert len(closed_after) == SLOWLORIS
    assert min(closed_after.values()) >= 1.8, "closed before --header-timeout"
    assert max(closed_after.values()) <= 3.0, "not all closed within ~3 s"
    assert timed_get(server.port)[1] == 200


def _wait_all_closed(socks, opened, deadline) -> tuple[dict[socket.socket, float], Counter]:
    """Read every socket until the server closes it: seconds from open to close,
    and what the server said before closing.

    Each must get nothing but a 408 before the close (or only the close).
    """
    closed: dict[socket.socket, float] = {}
    received: dict[socket.socket, bytes] = {}
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    try:
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                sock = key.fileobj
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    received[sock] = received.get(sock, b"") + data
                    continue
                closed[sock] = time.monotonic() - opened[sock]
                selector.unregister(sock)
    finally:
        selector.close()
    answers = Counter(received.get(s, b"")[:12].decode("latin-1") or "close" for s in socks)
    assert set(answers) <= {"HTTP/1.1 408", "close"}, answers
    return closed, answers


# --- endless heads -----------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "filler", "status", "limit"), [
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ", b"v", 431, 8190, id="header-line"),
    pytest.param(b"GET /", b"a", 414, 8190, id="request-line"),
    pytest.param(b"", b"A", 400, 8190, id="request-line-method"),
])
def test_endless_line_refused_as_soon_as_it_passes_the_limit(shared, prefix, filler, status,
                                                             limit):
    """100 KB without a CRLF, sent 1 KB at a time: the refusal arrives a few KB
    past the limit, long before the client is done."""
    with Conn.tcp(shared.port) as conn:
        conn.send(prefix)
        sent = len(prefix)
        answered = False
        while sent < 100 * 1024:
            try:
                conn.send(filler * 1024)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1024
            if ready([conn.sock], 0.01):
                answered = True
                break
        assert answered, f"no answer after {sent} bytes"
        print(f"\nendless line: {status} after {sent} bytes sent (limit {limit})")
        assert sent <= limit + len(prefix) + 4096, f"answered only after {sent} bytes"
        response = conn.read_response()
        assert response.status == status
        assert response.header("Connection") == "close"


# --- garbage -----------------------------------------------------------------------------


def _flood_wave(port: int, rng: random.Random, size: int) -> Counter:
    """``size`` connections at once, each sending garbage then EOF; what came back."""
    payloads = [garbage(rng, "/body") for _ in range(size)]
    socks = []
    outcomes: Counter = Counter()
    try:
        for payload in payloads:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(sock)
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                outcomes["reset while sending"] += 1
        for sock in socks:
            data, closed = read_to_eof(sock, timeout=10)
            assert closed, "the server kept a garbage connection open past its EOF"
            outcomes[data[:12].decode("latin-1") or "closed"] += 1
    finally:
        for sock in socks:
            sock.close()
    return outcomes


@pytest.mark.timeout(90)
def test_flood_of_garbage_leaves_every_shard_alive_with_flat_rss(gshard_proc):
    """3,000 connections of garbage in waves of 300 (random bytes up to 64 KB, TLS
    hellos, cut requests, oversized and endless heads, broken chunked bodies).

    RSS is read after a first wave has warmed the shards up (allocator arenas,
    greenlet stacks, the code paths of every refusal). The margin, 20 MiB, is
    what CPython's allocator may keep after a burst of large buffers; a leak of
    what each connection buffers (a 64 KB receive, up to the head limit) would
    pass 180 MiB over 3,000 connections.
    """
    need_descriptors(1024)
    server = gshard_proc("hostile_app:app", "--shards", "2")
    pids = sorted(server.shard_pids())
    rng = random.Random(20250607)
    _flood_wave(server.port, rng, 300)
    before = {pid: rss_kib(pid) for pid in pids}
    outcomes: Counter = Counter()
    started = time.monotonic()
    for _ in range(10):
        outcomes += _flood_wave(server.port, rng, 300)
    elapsed = time.monotonic() - started
    after = {pid: rss_kib(pid) for pid in pids}
    print(f"\nflood: 3000 connections in {elapsed:.1f}s, outcomes {dict(outcomes)}; RSS KiB "
          + ", ".join(f"{pid}: {before[pid]} -> {after[pid]}" for pid in pids))
    assert sorted(server.shard_pids()) == pids
    assert not [o for o in outcomes if o.startswith("HTTP/1.1 2")], outcomes
    assert {int(o[9:12]) for o in outcomes if o.startswith("HTTP/")} <= REFUSALS, outcomes
    for pid in pids:
        grew = after[pid] - before[pid]
        assert grew < 20 * 1024, f"shard {pid} grew {grew} KiB"
    assert timed_get(server.port)[1] == 200
    assert "Traceback" not in server.stderr.text


# --- timeouts ----------------------------------------------------------------------------


@pytest.fixture
def short_timeouts(gshard_proc):
    return gshard_proc("hostile_app:app", "--shards", "1", "--body-timeout", "1")


def test_stalled_body_abandoned_after_body_timeout(short_timeouts):
    with Conn.tcp(short_timeouts.port) as conn:
        conn.send(request_bytes("POST", "/body", headers=(("Content-Length", "100"),))
                  + b"x" * 10)
        stalled_from = time.monotonic()
        response = conn.read_response(timeout=5)
        stalled = time.monotonic() - stalled_from
        assert response.status == 408
        assert response.header("Connection") == "close"
        assert conn.wait_closed(timeout=3)
    assert 0.8 <= stalled <= 2.5, f"abandoned after {stalled:.2f}s with --body-timeout 1"


def test_a_trickled_body_is_abandoned_too(short_timeouts):
    """A byte every 0.7 s never stalls one read for --body-timeout (1 s), but
    averages far under the minimum rate, so the connection is cut anyway."""
    with Conn.tcp(short_timeouts.port) as conn:
        conn.send(request_bytes("POST", "/body", headers=(("Content-Length", "100"),)))
        started = time.monotonic()
        answered_after = None
        for _ in range(15):  # at most ~10 s of trickling
            try:
                conn.sock.send(b"x")
            except OSError:
                break
            readable, _, _ = select.select([conn.sock], [], [], 0.7)
            if readable:
                answered_after = time.monotonic() - started
                break
        assert answered_after is not None, "a 1-byte-per-0.7-s body still accepted after 10 s"
        assert answered_after < 4.0, f"cut only after {answered_after:.1f}s"
        assert conn.read_response(timeout=5).status == 408


# --- overload ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_overload_waits_in_the_kernel_queue_and_is_served(gshard_proc):
    """30 concurrent 0.4 s requests against 2 shards of --worker-connections 5:
    all get 200, none is refused or reset, and no shard ever had more than 5
    in flight (the app counts them in each shard)."""
    server = gshard_proc("hostile_app:app", "--shards", "2", "--worker-connections", "5")
    barrier = threading.Barrier(30)

    def client(i: int) -> dict:
        barrier.wait(timeout=10)
        with Conn.tcp(server.port, timeout=20) as conn:
            conn.send(request_bytes("GET", f"/slow?s=0.4&i={i}",
                                    headers=(("Connection", "close"),)))
            response = conn.read_response(timeout=20)
        assert response.status == 200, response
        return json.loads(response.body)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=30) as pool:
        results = list(pool.map(client, range(30)))
    elapsed = time.monotonic() - started
    peaks: dict[int, int] = {}
    for result in results:
        peaks[result["pid"]] = max(peaks.get(result["pid"], 0), result["peak"])
    served = Counter(r["pid"] for r in results)
    print(f"\noverload: 30 requests in {elapsed:.2f}s; per shard served {dict(served)}, "
          f"peak in flight {peaks}")
    assert len(results) == 30
    assert all(peak <= 5 for peak in peaks.values()), peaks
    # The busier shard got at least 15 at once, so it did reach its limit.
    assert max(peaks.values()) == 5, peaks
    # At most 10 at a time: three rounds of 0.4 s at the very least.
    assert elapsed >= 1.15, f"30 requests of 0.4 s took only {elapsed:.2f}s"


# --- body limit --------------------------------------------------------------------------


def test_body_limit_by_content_length(shared):
    with Conn.tcp(shared.port) as conn:
        # Refused from the head: the body is never sent.
        conn.send(request_bytes("POST", "/body", headers=(("Content-Length", "1001"),)))
        response = conn.read_response()
        assert response.status == 413
        assert conn.wait_closed()
    with Conn.tcp(shared.port) as conn:
        conn.send(request_bytes("POST", "/body", body=b"x" * 1000))
        response = conn.read_response()
        assert response.status == 200
        assert json.loads(response.body) == {"length": 1000}


def test_body_limit_by_chunk_size_before_its_data(shared):
    head = request_bytes("POST", "/body", headers=(("Transfer-Encoding", "chunked"),))
    with Conn.tcp(shared.port) as conn:
        conn.send(head + b"3e9\r\n")  # 1001 bytes announced, none sent
        response = conn.read_response()
        assert response.status == 413
        assert conn.wait_closed()
    with Conn.tcp(shared.port) as conn:  # 600 + 401: the total counts
        conn.send(head + b"258\r\n" + b"x" * 600 + b"\r\n191\r\n")
        assert conn.read_response().status == 413
    with Conn.tcp(shared.port) as conn:
        conn.send(head + b"258\r\n" + b"x" * 600 + b"\r\n190\r\n" + b"y" * 400 + b"\r\n0\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200
        assert json.loads(response.body) == {"length": 1000}


# --- header injection in responses -------------------------------------------------------


INJECTIONS = ["a%0D%0ASet-Cookie:%20evil=1", "a%0ASet-Cookie:%20evil=1",
              "a%0DSet-Cookie:%20evil=1", "a%00b"]


def _assert_injection_refused(port: int, text: str) -> None:
    with Conn.tcp(port) as conn:
        conn.send(request_bytes("GET", f"/inject?{text}"))
        response = conn.read_response()
        assert response.status == 500
        assert response.header("Set-Cookie") is None
        assert response.header("X-Echo") is None
        assert conn.wait_closed()


@pytest.mark.parametrize("text", INJECTIONS)
def test_response_header_injection_becomes_a_500(shared, text):
    """An application that copies request input into a response header cannot
    be made to split the response: the header is refused, the client gets a
    plain 500, and the connection closes."""
    _assert_injection_refused(shared.port, text)


# --- request smuggling -------------------------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


def _post(*fields: str, body: bytes = b"", line: str = "POST /body HTTP/1.1") -> bytes:
    return ("\r\n".join([line, *fields]) + "\r\n\r\n").encode("latin-1") + body


CHUNKED = "Transfer-Encoding: chunked"
SMUGGLING = [
    pytest.param(_post("Host: a", "Content-Length: 6", CHUNKED, body=b"0\r\n\r\nG"), 400,
                 id="cl-then-te"),
    pytest.param(_post("Host: a", CHUNKED, "Content-Length: 6", body=b"0\r\n\r\nG"), 400,
                 id="te-then-cl"),
    pytest.param(_post("Host: a", "Content-Length: 5", "Content-Length: 40", body=b"hello"), 400,
                 id="two-content-lengths"),
    pytest.param(_post("Host: a", "Content-Length: 5", "Content-Length: 5", body=b"hello"), 400,
                 id="two-equal-content-lengths"),
    pytest.param(_post("Host: a", "Content-Length: 5, 5", body=b"hello"), 400, id="cl-list"),
    pytest.param(_post("Host: a", "Content-Length: +5", body=b"hello"), 400, id="cl-plus"),
    pytest.param(_post("Host: a", "Transfer-Encoding:", " chunked", body=b"0\r\n\r\n"), 400,
                 id="te-obs-fold"),
    pytest.param(_post("Host: a", "X-Pad: x", " Transfer-Encoding: chunked", "Content-Length: 3",
                       body=b"0\r\n\r\n"), 400, id="te-line-starting-with-space"),
    pytest.param(_post("Host: a", "Transfer-Encoding: xchunked", body=b"0\r\n\r\n"), 400,
                 id="te-xchunked"),
    pytest.param(_post("Host: a", "Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"), 400,
                 id="te-chunked-twice"),
    pytest.param(_post("Host: a", CHUNKED, CHUNKED, body=b"0\r\n\r\n"), 400,
                 id="te-two-fields"),
    pytest.param(_post("Host: a", "Transfer-Encoding: chunked, identity", body=b"0\r\n\r\n"), 400,
                 id="te-chunked-then-identity"),
    pytest.param(_post("Host: a", "Transfer-Encoding : chunked", body=b"0\r\n\r\n"), 400,
                 id="te-space-before-colon"),
    pytest.param(_post("Host: a", "Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), 501,
                 id="te-gzip-chunked"),
    pytest.param(_post("Host: a", "Transfer-Encoding: \xa0chunked", body=b"0\r\n\r\n"), 400,
                 id="te-nbsp-chunked"),
    pytest.param(_post("Host: a", "Transfer-Encoding: chunked\x85", body=b"0\r\n\r\n"), 400,
                 id="te-chunked-nel"),
    pytest.param(b"\r\n" * 5 + _post("Host: a", line="GET / HTTP/1.1"), 400,
                 id="five-empty-lines-first"),
    pytest.param(_post(CHUNKED, line="POST /body HTTP/1.0", body=b"0\r\n\r\n"), 400,
                 id="te-in-http10"),
    pytest.param(_post("Host: a", CHUNKED, body=b"0x5\r\nhello\r\n0\r\n\r\n"), 400,
                 id="chunk-size-0x5"),
    pytest.param(_post("Host: a", CHUNKED, body=b"+5\r\nhello\r\n0\r\n\r\n"), 400,
                 id="chunk-size-plus"),
    pytest.param(_post("Host: a", CHUNKED, body=b"5 \r\nhello\r\n0\r\n\r\n"), 400,
                 id="chunk-size-trailing-space"),
    pytest.param(_post("Host: a", CHUNKED, body=b"1" + b"0" * 40 + b"\r\nhello\r\n0\r\n\r\n"),
                 400, id="chunk-size-2-to-the-160"),
    pytest.param(_post("Host: a", CHUNKED, body=b"5\nhello\r\n0\r\n\r\n"), 400,
                 id="chunk-size-bare-lf"),
    pytest.param(_post("Host: a", CHUNKED, body=b"5\r\nhello\r\n0\r\nContent-Length: 40\r\n\r\n"),
                 400, id="trailer-content-length"),
    pytest.param(b"GET / HTTP/1.1\nHost: a\n\n", 400, id="bare-lf-head"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400, id="bare-lf-one-field"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400, id="bare-cr"),
    pytest.param(_post("Host: a", "X-A: a\x00b"), 400, id="nul-in-value"),
    pytest.param(_post("Host: a", "X-A: a\rb"), 400, id="cr-in-value"),
    pytest.param(_post("Host : a"), 400, id="space-before-colon"),
    pytest.param(_post(line="GET / HTTP/1.1"), 400, id="missing-host"),
    pytest.param(_post("Host: a", "Host: b", line="GET / HTTP/1.1"), 400, id="two-hosts"),
    pytest.param(_post("Host: a", line="GET / HTTP/2.0"), 505, id="http-2.0"),
    pytest.param(_post("Host: a", line="GET / HTTP/0.9"), 505, id="http-0.9"),
    pytest.param(_post("Host: a", line="GET * HTTP/1.1"), 400, id="get-asterisk"),
    pytest.param(_post("Host: a", line="GET host:80 HTTP/1.1"), 400, id="get-authority"),
]


# What a request line or Host may not be, and CONNECT (whose tunnel bytes, sent
# behind it, must never be read as a request).
REFUSED_HEADS = [
    pytest.param(_post("Host: a", line="GET /caf\xc3\xa9 HTTP/1.1"), 400, id="target-raw-utf-8"),
    pytest.param(_post("Host: a", line="GET /..\xc0\xaf..\xc0\xafetc/passwd HTTP/1.1"), 400,
                 id="target-overlong-slash"),
    pytest.param(_post("Host: a", line="GET /a\x01b HTTP/1.1"), 400, id="target-control-byte"),
    pytest.param(_post("Host: a", line="GET /a\x7fb HTTP/1.1"), 400, id="target-del"),
    pytest.param(_post("Host:", line="GET / HTTP/1.1"), 400, id="host-empty"),
    pytest.param(_post("Host: :8000", line="GET / HTTP/1.1"), 400, id="host-port-only"),
    pytest.param(_post("Host:", line="GET / HTTP/1.0"), 400, id="host-empty-http10"),
    pytest.param(b"M" * 9000 + b" / HTTP/1.1\r\nHost: a\r\n\r\n", 400, id="method-too-long"),
    pytest.param(_post("Host: a", "Expect: 200-ok", line="GET / HTTP/1.1"), 417,
                 id="expect-other-than-100-continue"),
    pytest.param(_post("Host: a:443", line="CONNECT a:443 HTTP/1.1") + b"\x16\x03\x01tunnel", 501,
                 id="connect"),
    pytest.param(_post("Host: [::1]:22", line="CONNECT [::1]:22 HTTP/1.1") + SMUGGLED, 501,
                 id="connect-with-a-request-as-tunnel-bytes"),
]


def _assert_smuggling_refused(port: int, raw: bytes, status: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw + SMUGGLED)
        data, closed = read_to_eof(sock)
    assert closed, f"connection left open; got {data[:200]!r}"
    assert b"/smuggled" not in data
    responses = data.count(b"HTTP/1.1 ")
    assert responses == 1, f"{responses} responses: {data[:300]!r}"
    assert data.startswith(b"HTTP/1.1 %d " % status), data[:200]
    assert b"\r\nConnection: close\r\n" in data


@pytest.mark.parametrize(("raw", "status"), SMUGGLING)
def test_smuggling_attempt_refused_and_nothing_behind_it_served(shared, raw, status):
    """The attempt, then a request behind it in the same write: one refusal, then
    the close, and the smuggled request is never answered."""
    _assert_smuggling_refused(shared.port, raw, status)


@pytest.mark.parametrize(("raw", "status"), REFUSED_HEADS)
def test_refused_head_answered_once_and_nothing_behind_it_served(shared, raw, status):
    """Raw non-ASCII or control bytes in a target, a Host without a host, a
    method too long, CONNECT: one refusal from the server, the close, and the
    request behind it never answered."""
    _assert_smuggling_refused(shared.port, raw, status)


@pytest.mark.parametrize("line", [b"GET /\r\n", b"SSH-2.0-OpenSSH_8.9\r\n"])
def test_a_line_that_is_not_http_is_answered_at_once(shared, line):
    """HTTP/0.9's ``GET /`` or another protocol's greeting: 400 as soon as the
    line ends, not 408 at the head timeout (10 s) while the connection is held."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", shared.port), timeout=5) as sock:
        sock.sendall(line)
        data, closed = read_to_eof(sock)
    assert closed and data.startswith(b"HTTP/1.1 400 "), data[:200]
    assert time.monotonic() - started < 3


def test_request_line_of_8000_bytes_served(shared):
    # RFC 9112 3: at least 8,000 octets; gunicorn's default (4094) answers 414.
    target = "/" + "a" * (8000 - len("GET / HTTP/1.1"))
    with Conn.tcp(shared.port) as conn:
        conn.send(f"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        response = conn.read_response()
        assert response.status == 200
        assert response.body == f"ok {target}".encode()


@pytest.mark.timeout(60)
def test_shards_survive_the_battery(gshard_proc):
    """Every smuggling attempt, every header injection and a wave of garbage,
    one after another against one server: the same shards serve after it all."""
    server = gshard_proc("hostile_app:app", "--shards", "2", "--limit-request-body", "1000")
    pids = sorted(server.shard_pids())
    assert len(pids) == 2
    for case in SMUGGLING + REFUSED_HEADS:
        _assert_smuggling_refused(server.port, *case.values)
    for text in INJECTIONS:
        _assert_injection_refused(server.port, text)
    outcomes = _flood_wave(server.port, random.Random(20250608), 300)
    assert not [o for o in outcomes if o.startswith("HTTP/1.1 2")], outcomes
    assert sorted(server.shard_pids()) == pids
    assert all(process_state(pid) not in (None, "Z") for pid in pids)
    assert timed_get(server.port)[1] == 200
    # The only tracebacks are the refused injected headers, one each (logged as
    # application errors, which they are).
    log = server.stderr.text
    assert server.stderr.count(r"^Traceback") == len(INJECTIONS), log
    assert server.stderr.count(r"ValueError: response header .* forbidden") == len(INJECTIONS), log


@pytest.mark.timeout(60)
def test_out_of_descriptors_pauses_accepting_and_serves_everyone(gshard_proc):
    """At the open files limit a shard logs one warning, keeps the rest queued
    in the kernel, and accepts them as descriptors free up: nothing dropped."""
    server = gshard_proc("slow:app", "--shards", "1")
    (shard,) = server.shard_pids()
    in_use = len(os.listdir(f"/proc/{shard}/fd"))
    resource.prlimit(shard, resource.RLIMIT_NOFILE, (in_use + 8, in_use + 8))
    clients = 40
    conns = [Conn.tcp(server.port, timeout=20) for _ in range(clients)]
    for n, conn in enumerate(conns):
        conn.send(request_bytes("GET", f"/sleep?s=0.3&token={n}",
                                headers=(("Connection", "close"),)))
    started = time.monotonic()
    bodies = [conn.read_response().body for conn in conns]
    took = time.monotonic() - started
    for conn in conns:
        conn.close()
    assert bodies == [f"slept {n}".encode() for n in range(clients)]
    # At most ~8 at a time: the 0.3 s requests were served in several rounds.
    assert took > 0.9, took
    assert server.shard_pids() == [shard]
    log = server.stderr.text
    assert server.stderr.count(r"cannot accept connections \(Too many open files") == 1, log
    assert "Traceback" not in log, log
    assert server.stop() == 0


@pytest.mark.timeout(30)
def test_shards_lift_the_soft_open_files_limit(gshard_proc):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 64:
        pytest.skip(f"the hard open files limit ({hard}) leaves nothing to lift")
    # Lowered only while the process starts (it inherits the limit), so this
    # test process keeps its own descriptors.
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard // 2), hard))
    try:
        server = gshard_proc("hello:app", "--shards", "1", ready=False)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    server.stderr.wait_for(r"Ready: 1 shard serving", START_TIMEOUT)
    for pid in (server.pid, *server.shard_pids()):
        assert resource.prlimit(pid, resource.RLIMIT_NOFILE) == (hard, hard)
    assert server.stop() == 0
