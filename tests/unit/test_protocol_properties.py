"""Properties of the parser over generated input (hypothesis), sized for CI.

Every test runs a fixed number of examples, derandomized and without an
example database, so a CI run is the same run every time and takes a few
seconds. The long, randomized search over the same invariants is
``python -m tests.fuzz.fuzz_protocol`` (see its docstring).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gshard.errors import ProtocolError
from gshard.http import protocol
from gshard.http.protocol import Limits, Need, ServerConnection
from tests.support.protocol_checks import (
    DEFAULT_LIMITS,
    OUTSIDE_VISIBLE_ASCII,
    SMALL_LIMITS,
    authority_targets,
    buffer_bound,
    check_pipeline,
    check_round_trip,
    check_stream,
    hostile_streams,
    limit_sets,
    pipelines,
    requests,
    run,
    serialize,
    split,
)

CI = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
cut_points = st.lists(st.integers(0, 4000), max_size=8)


# (a) arbitrary bytes, split anywhere: events or ProtocolError, nothing else, no loop


@CI
@given(data=hostile_streams, cuts=cut_points, limits=limit_sets)
def test_arbitrary_bytes_give_events_or_protocol_error(data, cuts, limits):
    # check_stream fails on any other exception, on a loop, on a buffer past
    # the limits, and on a split that changes which requests come out.
    check_stream(data, cuts, limits)


# (b) valid requests parse to what was sent, however the bytes are split


@CI
@given(pipeline=pipelines(), cuts=cut_points)
def test_valid_pipelines_parse_the_same_split_anywhere(pipeline, cuts):
    whole = run([pipeline.data])
    check_pipeline(pipeline, whole)
    for pieces in (split(pipeline.data, cuts),
                   split(pipeline.data, range(0, len(pipeline.data), 3))):
        got = run(pieces)
        assert got.same_as(whole), f"pieces {[len(p) for p in pieces]}"


# (c) parse -> serialize -> parse is the identity on requests and bodies


@CI
@given(pipeline=pipelines(max_requests=2), chunk_sizes=st.lists(st.integers(1, 40), max_size=5))
def test_parse_serialize_parse_round_trip(pipeline, chunk_sizes):
    for request, body in run([pipeline.data]).complete_messages:
        check_round_trip(request, body, DEFAULT_LIMITS, chunk_sizes or None)


# (d) the request line and Host: what RFC 9112 refuses is refused, however split


def refused_alike(data: bytes, cuts, status: int, limits: Limits | None = None) -> None:
    """``data`` is refused with ``status`` before any request comes out, whole,
    split at ``cuts`` and (when short) byte by byte."""
    pieces = [[data], split(data, cuts)]
    if len(data) <= 512:
        pieces.append([data[i : i + 1] for i in range(len(data))])
    for chunks in pieces:
        got = run(chunks, limits)
        assert (got.end, got.status, got.messages) == ("error", status, ()), (
            f"{[len(c) for c in chunks]}: {got}")


def accepted(data: bytes) -> protocol.Request:
    """The one request ``data`` (a valid request) parses to."""
    got = run([data])
    assert got.end != "error", got
    return got.messages[0][0]


@CI
@given(wire=requests(), byte=st.sampled_from(OUTSIDE_VISIBLE_ASCII), at=st.integers(0, 10**6),
       cuts=cut_points)
def test_a_target_byte_outside_visible_ascii_is_refused(wire, byte, at, cuts):
    """RFC 9112 3.2 / RFC 3986 2: one byte outside 0x21-0x7E anywhere in a
    valid request's target (raw UTF-8, controls, DEL, SP) makes it a 400."""
    start = len(wire.method) + 1
    pos = start + at % (len(wire.target) + 1)
    data = wire.data[:pos] + bytes([byte]) + wire.data[pos:]
    refused_alike(data, cuts, 400)


@CI
@given(wire=requests(), port=st.sampled_from(["", ":80", ":", ":8080"]), cuts=cut_points)
def test_an_empty_host_is_refused(wire, port, cuts):
    """RFC 9110 4.2.1: an http(s) URI has a host; a Host field without one (empty,
    or only a port) is refused like a missing or repeated Host (RFC 9112 3.2),
    in any version, beside any other field."""
    request = accepted(wire.data)
    fields = [(n, v) for n, v in request.headers if n != "HOST"]
    data = serialize(request._replace(headers=(("HOST", port), *fields)), wire.body)
    refused_alike(data, cuts, 400)


@CI
@given(wire=requests(), target=authority_targets(), cuts=cut_points, tunnel=st.binary(max_size=64))
def test_connect_is_answered_501_and_nothing_after_it_is_read(wire, target, cuts, tunnel):
    """A well-formed CONNECT, whatever its fields, gets 501 from the server (no
    WSGI application can open a tunnel); the bytes behind it are not parsed."""
    request = accepted(wire.data)
    fields = tuple((n, v) for n, v in request.headers if n != "HOST")
    connect = request._replace(method="CONNECT", target=target,
                               headers=(("HOST", target), *fields))
    refused_alike(serialize(connect, wire.body) + tunnel, cuts, 501)


def repeated(alphabet: str) -> st.SearchStrategy[str]:
    """Text of 1 to 90 characters: a short piece repeated, so long ones come often."""
    return st.builds(lambda piece, times: (piece * times)[:90],
                     st.text(alphabet, min_size=1, max_size=6), st.integers(1, 90))


@CI
@given(method=repeated("ABCDEFGHIJKLMNOPQRSTUVWXYZ-"), target=repeated("/abc?=%"),
       cuts=cut_points)
def test_a_long_request_line_is_414_only_when_its_target_is_what_does_not_fit(method, target,
                                                                               cuts):
    """414 names the target: a line over the limit gets it when a one-byte target
    would fit, and 400 when the method leaves no room for any target."""
    line = f"{method} /{target} HTTP/1.1"
    data = (line + "\r\nHost: h\r\n\r\n").encode()
    limit = SMALL_LIMITS.request_line
    if len(line) <= limit:
        assert run([data], SMALL_LIMITS).end != "error"
        return
    status = 414 if len(f"{method} / HTTP/1.1") <= limit else 400
    refused_alike(data, cuts, status, SMALL_LIMITS)


# (e) memory: buffered input never exceeds the limits plus one receive


def feed_forever(conn: ServerConnection, piece: bytes, total: int) -> int | None:
    """Feed ``piece`` until ``total`` bytes went in or the parser refuses.

    After every piece the parser must have consumed or refused what went past
    its bound. Returns the refusal's status, or None if it never refused.
    """
    fed = 0
    while fed < total:
        conn.receive_data(piece)
        fed += len(piece)
        assert conn.buffered <= buffer_bound(conn) + len(piece)
        try:
            while (event := conn.next_event()) is not Need.DATA:
                assert event is not Need.PAUSED, "a request completed from garbage"
        except ProtocolError as exc:
            return exc.status
        assert conn.buffered <= buffer_bound(conn), (conn.state, conn.buffered)
    return None


PREFIXES = {
    "request line": b"GET /",
    "header line": b"GET / HTTP/1.1\r\nX-Long: ",
    "many fields": b"GET / HTTP/1.1\r\n",
    "chunk size line": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    "chunk extensions": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5",
    "trailer": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ",
    "trailer lines": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
}
FILLERS = {
    "request line": b"a",
    "header line": b"v",
    "many fields": b"X-F: v\r\n",
    "chunk size line": b"0",
    "chunk extensions": b";a=b",
    "trailer": b"v",
    "trailer lines": b"X-T: v\r\n",
}


@pytest.mark.parametrize("kind", list(PREFIXES))
@pytest.mark.parametrize("limits", [DEFAULT_LIMITS, SMALL_LIMITS], ids=["default", "small"])
def test_long_garbage_is_refused_within_the_bound(kind, limits):
    conn = ServerConnection(limits)
    conn.receive_data(PREFIXES[kind])
    piece = FILLERS[kind] * (8192 // len(FILLERS[kind]))
    assert feed_forever(conn, piece, 4 * limits.head) in (400, 414, 431)


@CI
@given(garbage=st.binary(min_size=1, max_size=64), repeat=st.integers(1, 600),
       receive=st.integers(1, 65536), limits=limit_sets,
       prefix=st.sampled_from([*PREFIXES.values(), b""]))
def test_repeated_garbage_stays_within_the_bound(garbage, repeat, receive, limits, prefix):
    stream = prefix + garbage * repeat
    conn = ServerConnection(limits)
    for start in range(0, len(stream), receive):
        piece = stream[start : start + receive]
        conn.receive_data(piece)
        assert conn.buffered <= buffer_bound(conn) + len(piece)
        try:
            while (event := conn.next_event()) is not Need.DATA:
                if event is Need.PAUSED:
                    return  # a request completed (garbage can be valid): nothing more is read
        except ProtocolError:
            return
        assert conn.buffered <= buffer_bound(conn)


def test_bound_holds_for_the_largest_limits():
    """gshard's 0-means-maximum settings still bound the head: by the total head
    limit (64 KiB unless changed), and with that set to 0 too, by the product of
    the per-line limits (just over 2 GiB), never unbounded; docs/security.md says what
    that means per connection."""
    assert Limits(request_line=8190, fields=32768, field_size=65536).head == 65536
    limits = Limits(request_line=8190, fields=32768, field_size=65536, head_total=0)
    assert limits.head == 8190 + 2 + 32768 * (65536 + 2) + 2
    conn = ServerConnection(limits)
    conn.receive_data(b"GET /" + b"a" * 9000)
    with pytest.raises(ProtocolError) as info:
        conn.next_event()
    assert info.value.status == 414
    assert conn.state is protocol.State.CLOSED


# Regression tests for what the fuzz run found (tests/fuzz/fuzz_protocol.py).


def _best_time(work, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def _trickle_heads(count: int, size: int) -> None:
    """``count`` heads of ``size`` bytes, each fed in 32-byte pieces."""
    line = b"X-F: " + b"v" * 57 + b"\r\n"
    head = b"GET / HTTP/1.1\r\nHost: h\r\n" + line * (size // len(line)) + b"\r\n"
    for _ in range(count):
        conn = ServerConnection(Limits(fields=32768, field_size=65536, head_total=0))
        for pos in range(0, len(head), 32):
            conn.receive_data(head[pos : pos + 32])
            event = conn.next_event()
        assert isinstance(event, protocol.Request)


def test_trickled_head_costs_linear_time():
    """Found by review while writing the memory properties: the search for the
    end of the head restarted at byte 0 on every receive, so a head trickled in
    small pieces cost time quadratic in its size (a 400 KB head in 32-byte
    pieces took 2 s of CPU; the default 823 KB head bound, ~9 s). It resumes
    where the last search stopped: one 400 KB head now costs what eight of
    50 KB cost (quadratic, it cost ~7 times as much; timing ratios, not
    absolute times, so a slow machine does not fail it)."""
    short = _best_time(lambda: _trickle_heads(8, 50_000))
    long = _best_time(lambda: _trickle_heads(1, 400_000))
    assert long < 2.5 * short, f"one 400 KB head {long:.3f}s, eight of 50 KB {short:.3f}s"


def _refused_without_more_input(data: bytes, limits: Limits | None = None) -> int | None:
    conn = ServerConnection(limits)
    conn.receive_data(data)
    with pytest.raises(ProtocolError) as info:
        while conn.next_event() is not Need.DATA:
            pass
    return info.value.status


@pytest.mark.parametrize(("data", "status"), [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * 9000 + b"\r\nX-Next: 1\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101, 431),
])
def test_complete_oversized_line_refused_before_the_head_ends(data, status):
    """Found by the fuzz run (atheris): only the line still arriving was held to
    its limit, so a too-long line that arrived whole with its CRLF waited for
    the end of the head, and an EOF then closed without a status where the same
    bytes in smaller pieces got 414/431. Every completed line is checked now."""
    assert _refused_without_more_input(data) == status
    whole = run([data])
    assert (whole.end, whole.status) == ("error", status)
    assert run(split(data, range(0, len(data), 7))).status == status
    # The fuzz run's own input, with the small limits it used.
    found = b"GET /\xc3\xa0e2\x1a\x00\x00\x00TTP/0.0\r\n" + b"\x00" * 100 + b"\r\n"
    assert run([found], SMALL_LIMITS).status == run(split(found, [20]), SMALL_LIMITS).status


@pytest.mark.parametrize("fields", [
    ("Content-Length: 5", "Content-Length: 5"),
    ("Content-Length: 5", "Content-Length: 005"),
    ("Content-Length: 5", "content-length: 5"),
])
def test_repeated_content_length_refused_even_when_equal(fields):
    """Found by the fuzz run's llhttp comparison: gshard accepted a repeated
    Content-Length with an equal value while refusing the list form
    ``5, 5``, which RFC 9110 8.6 treats the same; gunicorn and llhttp refuse
    both. No parser disagreed on the length, but one rule for both forms is
    simpler to trust, and matches the servers gshard replaces."""
    data = ("\r\n".join(["POST / HTTP/1.1", "Host: h", *fields]) + "\r\n\r\nhello").encode()
    assert _refused_without_more_input(data) == 400


def _trickle_chunk_framing(lines: int, size: int) -> None:
    """A chunked body of ``lines`` chunk-size lines and as many trailer lines,
    each about ``size`` bytes, fed in 8-byte pieces."""
    conn = ServerConnection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(conn.next_event(), protocol.Request)
    size_line = b"5" + b";a=b" * (size // 4) + b"\r\n"
    trailer = b"X-T: " + b"v" * size + b"\r\n"
    for _ in range(lines):
        for pos in range(0, len(size_line), 8):
            conn.receive_data(size_line[pos : pos + 8])
            assert conn.next_event() is Need.DATA
        conn.receive_data(b"hello\r\n")
        assert conn.next_event() == protocol.Data(b"hello")
    conn.receive_data(b"0\r\n")
    for _ in range(lines):
        for pos in range(0, len(trailer), 8):
            conn.receive_data(trailer[pos : pos + 8])
            assert conn.next_event() is Need.DATA
    conn.receive_data(b"\r\n")
    assert conn.next_event() is protocol.END_OF_MESSAGE


def test_trickled_chunk_framing_costs_linear_time():
    """Found while documenting the head fix above: chunk-size lines and trailer
    lines were searched from their start at every receive, so a client sending
    4 KB chunk extensions or 8 KB trailers in small pieces made each piece cost
    a scan of the whole line (20 lines of each took ~1-4 s). The search resumes
    now: 4 KB lines cost what eight times as many 500-byte lines cost
    (quadratic, ~5 times as much)."""
    short = _best_time(lambda: _trickle_chunk_framing(80, 500))
    long = _best_time(lambda: _trickle_chunk_framing(10, 4000))
    assert long < 2.5 * short, f"4 KB lines {long:.3f}s, 500-byte lines {short:.3f}s"
