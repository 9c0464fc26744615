"""Invariants of the sans-IO parser, and generators of requests, shared by the
property tests (``tests/unit/test_protocol_properties.py``, in CI) and the long
fuzz run (``tests/fuzz/fuzz_protocol.py``, by hand).

* ``run`` drives a ``ServerConnection`` the way ``gshard/http/connection.py`` does
  and records what it made of the bytes; it fails on any exception other than
  ``ProtocolError``, on a parser that keeps answering without consuming input,
  and on buffered input beyond the limits (``buffer_bound``);
* ``serialize`` writes a parsed request back to bytes;
* ``check_stream`` holds one byte stream to every invariant at once: the same
  outcome however it is split, every accepted request surviving a round trip,
  and (optionally) agreement with llhttp on where messages begin and end;
* the hypothesis strategies build valid request streams together with what
  the parser must make of them (``Wire``).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

from hypothesis import strategies as st

try:
    import httptools  # the differential oracle (llhttp); only the fuzz run needs it
except ImportError:  # pragma: no cover
    httptools = None

from gshard.errors import ProtocolError
from gshard.http.protocol import (
    CONNECTION_CLOSED,
    END_OF_MESSAGE,
    Data,
    Limits,
    Need,
    Request,
    ServerConnection,
    State,
)
from gshard.http.response import ResponseWriter

# Statuses a refusal may carry (None: the peer closed mid-message, nothing to answer).
REFUSALS = frozenset({400, 413, 414, 417, 431, 501, 505, None})

# Limits small enough that generated input reaches them, and the defaults.
SMALL_LIMITS = Limits(request_line=64, fields=4, field_size=48, chunk_line=32, body=300)
DEFAULT_LIMITS = Limits()


class ParserBug(AssertionError):
    """An invariant the parser broke (anything but a clean event or ProtocolError)."""


# --- driving a connection ---------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a connection made of a byte stream followed by EOF.

    ``messages`` holds every request the parser produced, with the body bytes
    it delivered (all of them when ``complete``); ``end`` is ``"eof"`` (the
    client closed between requests), ``"close"`` (a request ended the
    connection) or ``"error"`` with the refusal's ``status``.
    """

    messages: tuple[tuple[Request, bytes, bool], ...]
    end: str
    status: int | None = None
    peak_buffered: int = 0

    @property
    def complete_messages(self) -> list[tuple[Request, bytes]]:
        return [(req, body) for req, body, done in self.messages if done]

    def same_as(self, other: Outcome) -> bool:
        """Equal but for the peak buffer, which depends on how bytes arrived."""
        return (self.messages, self.end, self.status) == (other.messages, other.end, other.status)


def buffer_bound(conn: ServerConnection) -> int:
    """Most bytes the parser may hold while it waits for more input, in its state.

    A head is bounded by ``Limits.head``; a chunk-size or trailer line by its own
    limit; body data is handed out as it arrives, so nothing stays buffered.
    """
    limits = conn.limits
    if conn.state is State.IDLE:
        return limits.head
    if conn.state is State.BODY and conn.request is not None and conn.request.chunked:
        return max(limits.chunk_line, limits.field_size) + 1
    return 0


def run(pieces: list[bytes], limits: Limits | None = None) -> Outcome:
    """Feed ``pieces`` one ``receive_data`` at a time, then EOF, answering each request.

    Each request is answered with an empty 200 once its body was read (after
    asking for ``100 Continue``, as the first read of ``wsgi.input`` does).
    Raises ``ParserBug`` if the parser misbehaves; a ``ProtocolError`` becomes
    an ``"error"`` outcome. Any other exception propagates: that is a bug too.
    """
    conn = ServerConnection(limits)
    pending = [p for p in pieces if p]
    pending.reverse()
    total = sum(len(p) for p in pending)
    # Every event consumes input or moves the state on; a parser that answers
    # far more often than that is looping.
    budget = 4 * total + 4 * len(pending) + 32
    messages: list[list] = []
    peak = 0
    fed_eof = False
    while True:
        budget -= 1
        if budget < 0:
            raise ParserBug(f"parser still producing events after {4 * total + 32} calls")
        try:
            event = conn.next_event()
        except ProtocolError as exc:
            if exc.status not in REFUSALS:
                raise ParserBug(f"refusal with status {exc.status!r}: {exc}") from exc
            if conn.state is not State.CLOSED or conn.keep_alive:
                raise ParserBug("the connection stays usable after a ProtocolError") from exc
            try:
                conn.next_event()
            except ProtocolError as again:
                if again is not exc:
                    raise ParserBug("a second, different ProtocolError") from exc
            else:
                raise ParserBug("a ProtocolError was not final") from exc
            return _outcome(messages, "error", exc.status, peak)
        if event is Need.DATA:
            bound = buffer_bound(conn)
            if conn.buffered > bound:
                raise ParserBug(
                    f"{conn.buffered} bytes buffered in state {conn.state.value}, bound {bound}"
                )
            if fed_eof:
                raise ParserBug("parser asked for data after EOF")
            if pending:
                piece = pending.pop()
                conn.receive_data(piece)
                peak = max(peak, conn.buffered)
            else:
                conn.receive_data(b"")
                fed_eof = True
        elif isinstance(event, Request):
            if conn.state not in (State.BODY, State.DONE):
                raise ParserBug(f"request returned in state {conn.state}")
            messages.append([event, bytearray(), conn.state is State.DONE])
            conn.continue_bytes()
        elif isinstance(event, Data):
            if not event.data or not messages or messages[-1][2]:
                raise ParserBug(f"stray or empty Data event {event!r}")
            messages[-1][1] += event.data
            if conn.state is State.DONE:
                messages[-1][2] = True
        elif event is END_OF_MESSAGE:
            if not messages or not messages[-1][0].chunked or conn.state is not State.DONE:
                raise ParserBug("END_OF_MESSAGE outside a chunked body")
            messages[-1][2] = True
        elif event is Need.PAUSED:
            if not messages or not messages[-1][2]:
                raise ParserBug("paused before the request was complete")
            _check_body_length(messages[-1])
            writer = ResponseWriter(conn)
            writer.head("200 OK", [], 0)
            writer.end()
            if not conn.start_next_cycle():
                if messages[-1][0].keep_alive:
                    raise ParserBug("a keep-alive request ended the connection")
                return _outcome(messages, "close", None, peak)
        elif event is CONNECTION_CLOSED:
            if not fed_eof or conn.buffered:
                raise ParserBug("CONNECTION_CLOSED before EOF, or with bytes unread")
            return _outcome(messages, "eof", None, peak)
        else:
            raise ParserBug(f"unexpected event {event!r}")


def _check_body_length(message: list) -> None:
    request, body, _ = message
    if request.content_length is not None and len(body) != request.content_length:
        raise ParserBug(f"body of {len(body)} bytes, Content-Length {request.content_length}")
    if request.content_length is None and not request.chunked and body:
        raise ParserBug("a body without Content-Length or chunked")


def _outcome(messages, end, status, peak) -> Outcome:
    return Outcome(tuple((r, bytes(b), d) for r, b, d in messages), end, status, peak)


def split(data: bytes, cuts) -> list[bytes]:
    """``data`` cut at the given positions (any order, repeats and out-of-range ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# --- writing a request back ---------------------------------------------------------


def serialize(request: Request, body: bytes, chunk_sizes: list[int] | None = None) -> bytes:
    """The bytes of ``request`` with ``body``, as a client would send them.

    Fields go out in order with their (upper-cased) names and no space after
    the colon, so no line is longer than it came in; a chunked body is
    cut at ``chunk_sizes`` (one chunk if None), with no extensions or trailers
    (the parser validates and drops both).
    """
    lines = [f"{request.method} {request.target} {request.http_version}"]
    lines += [f"{name}:{value}" for name, value in request.headers]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if not request.chunked:
        return head + body
    out = [head]
    pos = 0
    for size in chunk_sizes or [len(body)]:
        piece = body[pos : pos + size]
        pos += len(piece)
        if piece:
            out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    if pos < len(body):
        out.append(b"%x\r\n%s\r\n" % (len(body) - pos, body[pos:]))
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def check_round_trip(request: Request, body: bytes, limits: Limits | None = None,
                     chunk_sizes: list[int] | None = None) -> None:
    """Parse(serialize(request, body)) must give back the same request and body."""
    again = run([serialize(request, body, chunk_sizes)], limits)
    if again.end == "error":
        raise ParserBug(f"re-serialised request refused ({again.status}): {request!r}")
    first = again.messages[0]
    if (first[0], first[1], first[2]) != (request, body, True):
        raise ParserBug(f"round trip changed the request:\n{request!r}\n{first[0]!r}")


# --- one stream against every invariant -------------------------------------------------


@dataclass
class StreamReport:
    """What ``check_stream`` saw, for the fuzz run's statistics."""

    whole: Outcome
    data: bytes = b""
    status_differs: tuple[int | None, int | None] | None = None
    llhttp: str = "skipped"  # "agree", "gshard-stricter", "llhttp-stricter:<reason>", ...
    notes: list[str] = field(default_factory=list)


def check_stream(data: bytes, cuts, limits: Limits | None = None, *,
                 differential: bool = False) -> StreamReport:
    """Hold ``data`` to every parser invariant; raise ``ParserBug`` on a violation.

    * fed whole and fed in the pieces ``cuts`` makes, the parser produces the
      same requests and bodies and ends the same way (refusing both times or
      neither). Which refusal status it gives may differ when the bytes break
      more than one rule: a streaming parser reports the first rule it can
      judge, and with less input it can judge fewer (a 414 for a request line
      already too long beats a 400 for a bare LF that has not arrived yet);
    * byte by byte too, for short streams;
    * every request accepted survives ``serialize`` and a second parse;
    * no other exception, no loop, no buffer beyond ``buffer_bound`` (``run``);
    * with ``differential`` (and httptools installed), llhttp is asked too: see
      ``compare_llhttp``.
    """
    whole = run([data], limits)
    report = StreamReport(whole, data)
    splits = [split(data, cuts)]
    if len(data) <= 512:
        splits.append([data[i : i + 1] for i in range(len(data))])
    for pieces in splits:
        got = run(pieces, limits)
        if got.messages != whole.messages or (got.end == "error") != (whole.end == "error"):
            raise ParserBug(
                f"split into {[len(p) for p in pieces]} the stream parses differently:\n"
                f"whole: {whole}\nsplit: {got}"
            )
        if got.end != whole.end:
            raise ParserBug(f"whole ends {whole.end}, split ends {got.end}")
        if got.status != whole.status:
            if None in (got.status, whole.status):
                # "closed mid-message" against a refusal would mean one parse
                # judged bytes the other never looked at.
                raise ParserBug(f"refused with {whole.status} whole, {got.status} split")
            report.status_differs = (whole.status, got.status)
    for request, body in whole.complete_messages:
        check_round_trip(request, body, limits)
    if differential and httptools is not None:
        report.llhttp = compare_llhttp(data, whole)
    return report


# --- differential oracle: llhttp --------------------------------------------------------


def llhttp_parse(data: bytes):
    """Messages llhttp (through httptools) makes of ``data``, and its error if any.

    Each message is ``[method, url, "major.minor", headers, body, complete]``.
    """
    messages: list[list] = []

    class Sink:
        def on_message_begin(self):
            messages.append([None, b"", None, [], bytearray(), False])

        def on_url(self, url):
            messages[-1][1] += url

        def on_header(self, name, value):
            if messages[-1][2] is None:  # trailer fields come here too, after the head
                messages[-1][3].append((name, value))

        def on_headers_complete(self):
            messages[-1][0] = parser.get_method().decode("latin-1")
            messages[-1][2] = parser.get_http_version()

        def on_body(self, body):
            messages[-1][4] += body

        def on_message_complete(self):
            messages[-1][5] = True

    parser = httptools.HttpRequestParser(Sink())
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return messages, "upgrade"
    except httptools.HttpParserError as exc:
        return messages, f"{type(exc).__name__}: {exc}"
    return messages, None


def compare_llhttp(data: bytes, whole: Outcome) -> str:
    """Where gshard and llhttp both accept a request, they must frame it alike.

    Request smuggling needs two parsers that disagree on where a message ends.
    For every request gshard accepted, llhttp's message at the same position
    must have the same method, target, version and body, and end where gshard's
    ended; gshard being stricter (llhttp accepts, gshard refuses) is fine, and
    llhttp being stricter is reported (it refuses methods it does not know, for
    one) for a person to judge. Returns a short classification.
    """
    theirs, error = llhttp_parse(data)
    ours = whole.messages
    for index, (request, body, complete) in enumerate(ours):
        if index >= len(theirs) or theirs[index][0] is None:
            return f"llhttp-stricter: {error or 'no message'}"
        method, url, version, headers, their_body, their_complete = theirs[index]
        expected = (request.method, request.target.encode("latin-1"), request.http_version,
                    list(request.headers))
        if version.startswith("1.") and version != "1.0":
            version = "1.1"  # gshard reads HTTP/1.2 and up as HTTP/1.1 (RFC 9110 2.5)
        got = (method, url, f"HTTP/{version}",
               [(n.decode("latin-1").upper(), v.decode("latin-1").strip(" \t"))
                for n, v in headers if b"_" not in n])
        if expected != got:
            raise ParserBug(f"llhttp reads message {index} as {got}, gshard as {expected}")
        if error == "upgrade" and index == len(theirs) - 1:
            # Upgrade: llhttp hands the rest of the stream to the new protocol;
            # gshard answers the request over HTTP/1.1. (CONNECT, the other
            # case, never gets here: gshard refuses it with 501 and closes.)
            return "llhttp-upgrade"
        if complete and their_complete and bytes(their_body) != body:
            raise ParserBug(
                f"llhttp and gshard disagree on the body of message {index}: "
                f"{bytes(their_body)[:80]!r} / {body[:80]!r}"
            )
        if complete and not their_complete:
            return f"llhttp-stricter: {error or 'message incomplete'}"
        if not complete and their_complete and whole.end == "error" and whole.status is None:
            raise ParserBug(f"llhttp completes message {index} that gshard found cut short")
    if whole.end == "error" and len(theirs) > len(ours) and theirs[len(ours)][5]:
        return "gshard-stricter"
    if whole.end == "error":
        return "both-refuse" if error else "gshard-stricter"
    return "agree"


# --- strategies: valid request streams --------------------------------------------------

_TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_UPPER_TCHAR = "".join(c for c in _TCHAR if not c.islower())
_VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
_OBS_TEXT = "".join(chr(c) for c in range(0x80, 0x100))
_PATH_CHARS = "abcxyzABC019-._~!$&'()*+,;=:@/%?"
# What a request target may not hold: anything but visible ASCII (RFC 3986 2).
OUTSIDE_VISIBLE_ASCII = bytes([*range(0x00, 0x21), 0x7F, *range(0x80, 0x100)])
# Field names that decide framing or the connection; generated apart.
_SPECIAL = frozenset({"HOST", "CONTENT-LENGTH", "TRANSFER-ENCODING", "CONNECTION", "EXPECT",
                      "CONTENT-TYPE"})
_FORBIDDEN_TRAILERS = frozenset(
    {"CONTENT-LENGTH", "TRANSFER-ENCODING", "HOST", "CONNECTION", "KEEP-ALIVE", "TE", "TRAILER",
     "UPGRADE", "EXPECT", "CONTENT-ENCODING", "CONTENT-RANGE"}
)

tokens = st.text(_TCHAR, min_size=1, max_size=12)
# CONNECT is never a valid request here: gshard answers it 501 (see connect_requests).
methods = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "PROPFIND"]),
    st.text(_UPPER_TCHAR, min_size=1, max_size=10).filter(lambda m: m != "CONNECT"),
)
ows = st.sampled_from(["", "", " ", "\t", "  ", " \t"])


@st.composite
def field_values(draw, max_size: int = 40) -> str:
    """A field value without its surrounding whitespace: VCHAR/obs-text, inner SP/HTAB."""
    chars = st.sampled_from(_VCHAR + _OBS_TEXT[:8] + "  \t")
    text = draw(st.text(chars, max_size=max_size))
    return text.strip(" \t")


_REG_NAME_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;="


@st.composite
def host_values(draw) -> str:
    """A valid Host value (RFC 9110 7.2): a host that is not empty, and an optional port."""
    host = draw(st.one_of(
        st.sampled_from(["example.com", "[::1]", "[2001:db8::7]", "[v1.x:y]", "127.0.0.1",
                         "x%41y"]),
        st.text(st.sampled_from(_REG_NAME_CHARS), min_size=1, max_size=12),
    ))
    port = draw(st.sampled_from(["", "", ":80", ":8080", ":"]))
    return host + port


@st.composite
def targets(draw, method: str) -> str:
    """A valid target for ``method``: visible ASCII only, in any form but authority-form."""
    kind = draw(st.sampled_from(["origin", "origin", "absolute", "asterisk"]))
    path = "/" + draw(st.text(st.sampled_from(_PATH_CHARS), max_size=30))
    if kind == "asterisk" and method == "OPTIONS":
        return "*"
    if kind == "absolute":
        scheme = draw(st.sampled_from(["http", "https", "HTTP", "hTTps"]))
        host = draw(st.sampled_from(["example.com", "h", "[::1]", "127.0.0.1", "x.y-z"]))
        port = draw(st.sampled_from(["", ":80", ":8080", ":"]))
        rest = draw(st.sampled_from(["", path]))
        return f"{scheme}://{host}{port}{rest}"
    return path


@st.composite
def authority_targets(draw) -> str:
    """A valid authority-form target (CONNECT's): host and port."""
    host = draw(st.sampled_from(["example.com", "h", "[::1]", "10.0.0.1", "a-b.c_d"]))
    return f"{host}:{draw(st.integers(0, 65535))}"


@dataclass
class Wire:
    """A valid request's bytes and what the parser must make of them."""

    data: bytes
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]  # as the parser reports them
    body: bytes
    keep_alive: bool
    chunked: bool
    content_length: int | None
    expect_continue: bool


@st.composite
def requests(draw, methods=methods) -> Wire:
    """One valid request: any method and target form, fields, and a body framed
    by Content-Length or chunked (with extensions and trailers). A version
    above HTTP/1.1 (1.2 to 1.9) is read as HTTP/1.1 (RFC 9110 2.5)."""
    method = draw(methods)
    target = draw(targets(method))
    minor = draw(st.sampled_from([1] * 11 + [0] * 4 + [2]))
    if minor == 2:
        minor = draw(st.integers(2, 9))
    sent_version = f"HTTP/1.{minor}"
    version = "HTTP/1.0" if minor == 0 else "HTTP/1.1"
    http11 = version == "HTTP/1.1"
    # (name as sent, value, whitespace before it, whitespace after it)
    fields: list[tuple[str, str, str, str]] = []

    def add(name: str, value: str) -> None:
        fields.append((name, value, draw(ows), draw(ows)))

    if http11 or draw(st.booleans()):
        add(draw(st.sampled_from(["Host", "host", "HOST"])), draw(host_values()))
    for _ in range(draw(st.integers(0, 5))):
        name = draw(tokens)
        if name.upper() in _SPECIAL:
            continue
        add(name, draw(field_values()))
    connection = draw(st.sampled_from([None, None, "close", "keep-alive", "Keep-Alive",
                                       "upgrade", "TE, close", "keep-alive, upgrade"]))
    if connection is not None:
        add("Connection", connection)
    if draw(st.integers(0, 3)) == 0:
        add("Content-Type", draw(field_values(20)))
    expect = http11 and draw(st.integers(0, 5)) == 0
    if expect:
        add("Expect", "100-continue")

    framing = draw(st.sampled_from(["none", "length", "chunked"] if http11
                                   else ["none", "length"]))
    body = b""
    body_bytes = b""
    content_length = None
    if framing == "length":
        body = draw(st.binary(max_size=64))
        content_length = len(body)
        zeros = "0" * draw(st.integers(0, 2))
        add(draw(st.sampled_from(["Content-Length", "content-length"])), f"{zeros}{len(body)}")
        body_bytes = body
    elif framing == "chunked":
        add("Transfer-Encoding", draw(st.sampled_from(["chunked", "Chunked", "CHUNKED"])))
        parts = []
        for data in draw(st.lists(st.binary(min_size=1, max_size=24), max_size=4)):
            parts.append(draw(chunk_size_line(len(data))) + b"\r\n" + data + b"\r\n")
            body += data
        parts.append(draw(chunk_size_line(0)) + b"\r\n")
        for _ in range(draw(st.integers(0, 2))):
            name = draw(tokens)
            if name.upper() in _FORBIDDEN_TRAILERS:
                continue
            value = draw(field_values(20))
            parts.append(f"{name}:{draw(ows)}{value}{draw(ows)}\r\n".encode("latin-1"))
        parts.append(b"\r\n")
        body_bytes = b"".join(parts)
    order = draw(st.permutations(range(len(fields))))
    fields = [fields[i] for i in order]
    lines = [f"{method} {target} {sent_version}"]
    for name, value, lead, trail in fields:
        lines.append(f"{name}:{lead}{value}{trail}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body_bytes

    reported = [(n.upper(), v) for n, v, _, _ in fields if "_" not in n]
    tokens_seen = {t.strip() for n, v, _, _ in fields if n.upper() == "CONNECTION"
                   for t in v.lower().split(",")}
    keep_alive = "close" not in tokens_seen and (http11 or "keep-alive" in tokens_seen)
    return Wire(data, method, target, version, reported, body, keep_alive,
                framing == "chunked", content_length, expect)


@st.composite
def chunk_size_line(draw, size: int) -> bytes:
    """A chunk-size line for ``size``: any case, leading zeros, extensions with BWS."""
    digits = f"{size:x}"
    if draw(st.booleans()):
        digits = digits.upper()
    line = "0" * draw(st.integers(0, 3)) + digits
    for _ in range(draw(st.integers(0, 2))):
        line += f"{draw(ows)};{draw(ows)}{draw(tokens)}"
        kind = draw(st.sampled_from(["none", "token", "quoted"]))
        if kind == "token":
            line += f"{draw(ows)}={draw(ows)}{draw(tokens)}"
        elif kind == "quoted":
            inner = draw(st.text(st.sampled_from("ab \t!#[]~" + _OBS_TEXT[:2]), max_size=8))
            escaped = draw(st.sampled_from(["", '\\"', "\\\\", "\\a"]))
            line += f'={chr(34)}{inner}{escaped}{chr(34)}'
    return line.encode("latin-1")


@dataclass
class Pipeline:
    """Several requests on one connection, and what must come of them."""

    data: bytes
    wires: list[Wire]  # the requests the parser must produce, in order
    end: str  # "close" if one of them ends the connection, else "eof"


@st.composite
def pipelines(draw, max_requests: int = 4) -> Pipeline:
    wires = draw(st.lists(requests(), min_size=1, max_size=max_requests))
    data = b"".join(b"\r\n" * draw(st.integers(0, 2)) + w.data for w in wires)
    owed = []
    for wire in wires:
        owed.append(wire)
        if not wire.keep_alive:
            return Pipeline(data, owed, "close")
    return Pipeline(data, owed, "eof")


def check_pipeline(pipeline: Pipeline, got: Outcome) -> None:
    """The outcome is exactly what the generated requests say it must be."""
    if got.end == "error":
        raise ParserBug(f"valid stream refused with {got.status}: {pipeline.data[:300]!r}")
    if got.end != pipeline.end or len(got.messages) != len(pipeline.wires):
        raise ParserBug(f"{len(got.messages)} requests ending {got.end}, expected "
                        f"{len(pipeline.wires)} ending {pipeline.end}")
    for (request, body, complete), wire in zip(got.messages, pipeline.wires, strict=True):
        want = (wire.method, wire.target, wire.version, tuple(wire.headers), wire.content_length,
                wire.chunked, wire.keep_alive, wire.expect_continue)
        if tuple(request) != want or body != wire.body or not complete:
            raise ParserBug(f"parsed {request!r} with body {body!r}, expected {want} {wire.body!r}")


# --- strategies: hostile input --------------------------------------------------------

_INTERESTING = [
    b"\r\n", b"\r", b"\n", b"\r\n\r\n", b" ", b"\t", b":", b";", b"=", b'"', b"\x00", b"\x7f",
    b"\xff", b"0", b"00", b"f", b"ffffffffffffffff", b"-1", b"+", b"0x", b",", b"chunked",
    b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n", b"Content-Length: 0\r\n",
    b"Host: h\r\n", b"Connection: close\r\n", b"Expect: 100-continue\r\n", b"HTTP/1.1",
    b"HTTP/1.0", b"GET / HTTP/1.1\r\n", b"POST / HTTP/1.1\r\nHost: h\r\n", b"0\r\n\r\n",
    b"5\r\nhello\r\n", b"Transfer-Encoding: identity\r\n", b"\r\n ",
]


@st.composite
def mutated(draw, base=None) -> bytes:
    """A valid request stream with a few bytes inserted, deleted or replaced."""
    data = bytearray(draw(pipelines(3)).data if base is None else base)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "byte"]))
        if op == "byte":
            data[pos:pos + 1] = bytes([draw(st.integers(0, 255))])
        elif op == "delete":
            data[pos:pos + draw(st.integers(1, 8))] = b""
        else:
            token = draw(st.sampled_from(_INTERESTING))
            end = pos + (draw(st.integers(1, 4)) if op == "replace" else 0)
            data[pos:end] = token
    return bytes(data)


hostile_streams = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(_INTERESTING), max_size=30).map(b"".join),
    mutated(),
)
limit_sets = st.sampled_from([DEFAULT_LIMITS, SMALL_LIMITS])
