"""Server-side HTTP/1.1 requests as a state machine over bytes, with no I/O.

The caller owns the socket: it hands received bytes to ``receive_data`` and
pulls events with ``next_event``. The response to each request is framed by
``response.ResponseWriter``, which tells this side whether the connection
can carry another request. Nothing here reads a clock, so every rule can be
tested by feeding bytes, split anywhere.

Parsing is strict where leniency has let requests be smuggled (RFC 9112):
Content-Length beside Transfer-Encoding, repeated or list-form lengths,
obs-fold, bare LF or CR, control bytes in fields, whitespace before a colon,
an HTTP/1.1 request without exactly one Host, a Host that names no host, a
request target with bytes outside visible ASCII. Each refusal is a
``ProtocolError`` carrying the status to answer with. Bare LF line endings are
refused everywhere (400): accepting them is how one request is read as two.

The head is validated with one regular expression over the whole field block
(the matching runs in C), then split. Measured against httptools (llhttp)
feeding Python callbacks, a typical 5-header request costs 4.6 us here against
2.4 us, while llhttp refuses requests RFC 9112 allows (tokens such as
``-BLARGH`` as methods, whitespace around chunk-extension semicolons).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NamedTuple

from gshard.errors import ProtocolError


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may make the server buffer.

    The defaults are gunicorn's, so a request gunicorn accepts is accepted here,
    but for the request line: gunicorn's maximum (8190) rather than its 4094,
    because RFC 9112 3 asks for at least 8,000 octets.
    """

    request_line: int = 8190
    fields: int = 100
    field_size: int = 8190
    # A chunk-size line with its extensions; nothing legitimate comes near it.
    chunk_line: int = 4096
    # Request body bytes; 0 is unlimited.
    body: int = 0
    # A whole head; 0 leaves only the product of the limits above (~800 KiB
    # by default), which 1,000 stalled connections would multiply by 1,000.
    head_total: int = 65536

    @property
    def head(self) -> int:
        """Most bytes a complete head may take, so a partial one is bounded too."""
        product = self.request_line + 2 + self.fields * (self.field_size + 2) + 2
        return min(product, self.head_total) if self.head_total else product


class State(enum.Enum):
    """Where the request side of the connection is."""

    IDLE = "idle"  # waiting for the next request head
    BODY = "body"  # receiving a request body
    DONE = "done"  # request received; the next one waits until the response ends
    CLOSED = "closed"  # nothing more will be read on this connection


class Need(enum.Enum):
    """``next_event`` results that are not events."""

    DATA = "need data"  # feed more bytes with receive_data
    PAUSED = "paused"  # finish the response, then call start_next_cycle


class Request(NamedTuple):
    """A parsed request head (a NamedTuple: immutable, and cheap to make per request).

    ``headers`` keeps field order with upper-cased names; fields whose name
    holds an underscore are dropped, because WSGI maps ``_`` and ``-`` to the
    same environ key and a proxy that strips one would let the other spoof it.
    """

    method: str
    target: str
    http_version: str
    headers: tuple[tuple[str, str], ...]
    content_length: int | None
    chunked: bool
    keep_alive: bool
    expect_continue: bool


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of request body, already de-chunked."""

    data: bytes


class EndOfMessage:
    """The request body is complete."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EndOfMessage"


class ConnectionClosed:
    """The client closed the connection between requests."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ConnectionClosed"


END_OF_MESSAGE = EndOfMessage()
CONNECTION_CLOSED = ConnectionClosed()

Event = Request | Data | EndOfMessage | ConnectionClosed

# --- grammar (RFC 9110 / 9112), over the head decoded as latin-1 -----------

_TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN = f"[{_TCHAR}]+"
_FIELD_VCHAR = r"[\x21-\x7e\x80-\xff]"
_FIELD_VALUE = rf"(?:{_FIELD_VCHAR}(?:[ \t\x21-\x7e\x80-\xff]*{_FIELD_VCHAR})?)?"
# One field line: the token is followed by the colon at once (no whitespace
# before it) and a line never starts with whitespace (no obs-fold).
_FIELD_LINES = re.compile(rf"(?:{_TOKEN}:[ \t]*{_FIELD_VALUE}[ \t]*\r\n)*")
# The target is visible ASCII only (RFC 9112 3.2 takes it from RFC 3986, whose
# characters are all visible ASCII, section 2: anything else is percent-encoded),
# so raw UTF-8, overlong encodings and control bytes never reach a path decoder.
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
# Optional whitespace around list elements is space and tab only (RFC 9110
# 5.6.3): str.strip() would also take 0x85 and 0xA0 (the head is latin-1), so
# "\xa0chunked" would be read as chunked where gunicorn and llhttp refuse it.
_OWS = " \t"
# Empty lines a client may send before a request line (RFC 9112 2.2 asks a
# server to ignore at least one; some clients end a body with an extra CRLF).
# More is not HTTP, and would keep a connection in a head forever.
_EMPTY_LINES_IGNORED = 4
_METHOD = re.compile(_TOKEN)
_SHORTEST_VERSION = len(" HTTP/1.1")
# RFC 3986 authority parts: a host is an IP literal or a reg-name (IPv4
# addresses are reg-names too); a port is digits. The Host field's reg-name is
# not empty: an http(s) URI with an empty host is invalid (RFC 9110 4.2.1).
_REG_NAME_CHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})"
_IP_LITERAL = r"\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+)\]"
_HOST_FIELD = re.compile(rf"(?:{_IP_LITERAL}|{_REG_NAME_CHAR}+)(?::[0-9]*)?")
# An http(s) URI must name a host (RFC 9110 4.2.1). Userinfo is tolerated, as
# gunicorn and the corpus's valid cases take it, and never becomes part of
# HTTP_HOST (RFC 9110 4.2.4 asks only that it not be trusted).
_ABSOLUTE_FORM = re.compile(
    rf"(?i:https?)://(?:(?:{_REG_NAME_CHAR}|:)*@)?(?:{_IP_LITERAL}|{_REG_NAME_CHAR}+)"
    r"(?::[0-9]*)?(?=[/?#]|\Z)"
)
_AUTHORITY_FORM = re.compile(rf"(?:{_IP_LITERAL}|{_REG_NAME_CHAR}+):[0-9]+")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rf"0*([0-9A-Fa-f]{{1,15}})"
    rf"(?:[ \t]*;[ \t]*{_TOKEN}(?:[ \t]*=[ \t]*(?:{_TOKEN}|{_QUOTED}))?)*".encode("latin-1")
)
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")

# Fields that decide framing, routing or the connection itself; a client must
# not be able to change them after the body (RFC 9110 6.5.1).
_FORBIDDEN_TRAILERS = frozenset(
    {"CONTENT-LENGTH", "TRANSFER-ENCODING", "HOST", "CONNECTION", "KEEP-ALIVE",
     "TE", "TRAILER", "UPGRADE", "EXPECT", "CONTENT-ENCODING", "CONTENT-RANGE"}
)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _check_target(method: str, target: str) -> None:
    """A target that is not origin-form: absolute-form, ``OPTIONS *``, and
    authority-form for CONNECT only (CONNECT takes nothing else)."""
    if method == "CONNECT":
        if _AUTHORITY_FORM.fullmatch(target):
            return
    elif _ABSOLUTE_FORM.match(target) or (target == "*" and method == "OPTIONS"):
        return
    raise ProtocolError(f"invalid request target {target[:64]!r}", 400)


def _malformed_request_line(line: str) -> ProtocolError:
    """The refusal of a request line that is not ``method SP target SP HTTP/d.d``,
    naming the commonest cause a client can fix."""
    if not line.isascii():
        return ProtocolError("request line with a byte outside ASCII (a target's "
                             "non-ASCII characters must be percent-encoded)", 400)
    return ProtocolError("malformed request line", 400)


def _overlong_request_line(line: str, limit: int) -> ProtocolError:
    """The refusal of a request line longer than ``limit`` (``line``: as much of
    it as has arrived).

    414 (URI Too Long) names the target, so it is the answer only when the
    target is what makes the line too long: a valid method, and a line that
    would fit with a one-byte target in place of its own. A method that leaves
    no room for any target, anything but a method, or bytes past the target's
    end that do not fit either are a bad request (400). A line still arriving
    gets the answer it gets complete, unless what follows its target is long too.
    """
    method_end = line.find(" ")
    if method_end > 0 and _METHOD.fullmatch(line, 0, method_end):
        target_end = line.find(" ", method_end + 1)
        after_target = len(line) - target_end if target_end != -1 else 0
        if method_end + 2 + max(after_target, _SHORTEST_VERSION) <= limit:
            return ProtocolError("request target too long", 414)
    return ProtocolError("request line too long", 400)


def _transfer_codings(values: list[str]) -> bool:
    """Whether the body is chunked; refuse codings we cannot frame or apply."""
    codings = [c.strip(_OWS).lower() for v in values for c in v.split(",")]
    if "" in codings:
        raise ProtocolError("empty transfer coding", 400)
    if codings[-1] != "chunked":
        raise ProtocolError("transfer coding does not end in chunked", 400)
    if len(codings) > 1:
        if "chunked" in codings[:-1]:
            raise ProtocolError("chunked applied twice", 400)
        raise ProtocolError(f"transfer coding {codings[0]!r} not implemented", 501)
    return True


# Request fields that decide framing or the connection; the rest pass through.
_FRAMING_FIELDS = frozenset(
    {"HOST", "CONTENT-LENGTH", "TRANSFER-ENCODING", "CONNECTION", "EXPECT", "CONTENT-TYPE"}
)


def parse_head(head: bytes | bytearray, limits: Limits) -> Request:
    """Parse one request head (request line to the empty line, inclusive).

    Raises ``ProtocolError`` with the status the client should get.
    """
    text = str(head, "latin-1")
    line_end = text.find("\r\n")
    method, target, http11 = request_line(text, line_end, limits)
    # A client sends the same field lines again and again (every request of a
    # keep-alive connection, every client of one kind): what they parse to is
    # remembered, bounded, for the same limits. Any other block is parsed in full.
    fields = text[line_end + 2 :]
    known = _parsed_fields.get(fields)
    if known is not None and known[0] is limits and known[1] == http11:
        headers, content_length, chunked, keep_alive, expect_continue = known[2]
    else:
        parsed = _parse_fields(text, line_end, http11, limits)
        headers, content_length, chunked, keep_alive, expect_continue = parsed
        if len(fields) <= _PARSED_FIELDS_LONGEST:
            if len(_parsed_fields) >= _PARSED_FIELDS_KEPT:
                _parsed_fields.clear()
            _parsed_fields[fields] = (limits, http11, parsed)
    if method == "CONNECT":
        # A WSGI application cannot open a tunnel, and any 2xx would tell the
        # client it has one (RFC 9110 9.3.6). The refusal closes the connection,
        # since the client may already be sending tunnel bytes behind the head.
        raise ProtocolError("CONNECT not implemented: a WSGI server opens no tunnels", 501)
    return _new_tuple(Request, (
        method, target, "HTTP/1.1" if http11 else "HTTP/1.0", headers,
        content_length, chunked, keep_alive, expect_continue,
    ))


def request_line(text: str, line_end: int, limits: Limits) -> tuple:
    """(method, target, HTTP/1.1 or later) of the request line ``text[:line_end]``.

    Judged as soon as the line is complete, before the rest of the head
    arrives, so that a line that is not HTTP (``GET /`` of HTTP/0.9, another
    protocol's greeting) is answered at once rather than at the head timeout.
    """
    if line_end > limits.request_line:
        raise _overlong_request_line(text[:line_end], limits.request_line)
    match = _REQUEST_LINE.fullmatch(text, 0, line_end)
    if match is None:
        raise _malformed_request_line(text[:line_end])
    method, target, major, minor = match.groups()
    if method != method.upper():
        # Methods are case-sensitive and every registered one is upper case;
        # gunicorn refuses lower-case ones too, so no proxy in front sees a
        # different method than the application.
        raise ProtocolError(f"invalid method {method[:32]!r}", 400)
    if major != "1":
        raise ProtocolError(f"HTTP version {major}.{minor} not supported", 505)
    if target[0] != "/" or method == "CONNECT":
        _check_target(method, target)
    # RFC 9110 2.5: a higher minor version (HTTP/1.2) is read as the highest
    # this server implements, HTTP/1.1, and the response says HTTP/1.1 (6.2).
    return method, target, minor != "0"


# Field blocks already parsed, keyed by their text: (limits, http11, result).
# Bounded in count and size, since the text comes from clients.
_parsed_fields: dict[str, tuple[Limits, bool, tuple]] = {}
_PARSED_FIELDS_KEPT = 256
_PARSED_FIELDS_LONGEST = 2048


def _parse_fields(
    text: str, line_end: int, http11: bool, limits: Limits
) -> tuple[tuple[tuple[str, str], ...], int | None, bool, bool, bool]:
    """(headers, Content-Length, chunked, keep-alive, expects 100-continue) from
    the field lines that follow the request line at ``line_end``."""
    if _FIELD_LINES.fullmatch(text, line_end + 2, len(text) - 2) is None:
        raise ProtocolError("malformed header field", 400)

    lines = text[line_end + 2 : -4].split("\r\n") if len(text) > line_end + 4 else []
    if len(lines) > limits.fields:
        raise ProtocolError("too many header fields", 431)
    longest = limits.field_size - 2  # the limit counts the CRLF, as gunicorn's does
    headers = []
    framing = []
    for line in lines:
        if len(line) > longest:
            raise ProtocolError("header field too large", 431)
        name, _, value = line.partition(":")
        name = name.upper()
        if "_" in name:
            continue
        value = value.strip(" \t")
        headers.append((name, value))
        if name in _FRAMING_FIELDS:
            framing.append((name, value))
    if http11 and len(framing) == 1 and framing[0][0] == "HOST":
        # Most requests: one Host, no body, default keep-alive.
        _check_host(framing[0][1])
        content_length, chunked, keep_alive, expect_continue = None, False, True, False
    else:
        content_length, chunked, keep_alive, expect_continue = _framing(framing, http11, limits)
    return tuple(headers), content_length, chunked, keep_alive, expect_continue


# NamedTuple's generated __new__ is Python code; tuple.__new__ makes the same
# Request at ~40% of the cost, once per request.
_new_tuple = tuple.__new__
# Hosts already found valid: clients send the same few, and the regular
# expression costs ~0.4 us. Bounded, since the values come from clients.
_valid_hosts: set[str] = set()


def _check_host(value: str) -> None:
    """RFC 9112 3.2: a Host that is not ``host[:port]`` gets a 400."""
    if value in _valid_hosts:
        return
    if _HOST_FIELD.fullmatch(value) is None:
        raise ProtocolError(f"invalid Host {value[:64]!r}", 400)
    if len(_valid_hosts) < 1024 and len(value) <= 255:
        _valid_hosts.add(value)


def _framing(
    fields: list[tuple[str, str]], http11: bool, limits: Limits
) -> tuple[int | None, bool, bool, bool]:
    """(Content-Length, chunked, keep-alive, expects 100-continue) from the framing fields."""
    hosts = content_types = 0
    lengths: list[str] = []
    codings: list[str] = []
    connection = ""
    expect = ""
    for name, value in fields:
        if name == "HOST":
            hosts += 1
            _check_host(value)
        elif name == "CONTENT-LENGTH":
            lengths.append(value)
        elif name == "TRANSFER-ENCODING":
            codings.append(value)
        elif name == "CONNECTION":
            connection = f"{connection},{value.lower()}"
        elif name == "EXPECT":
            expect = value.lower()
            if expect != "100-continue":
                # RFC 9110 10.1.1: 100-continue is the only expectation defined, and
                # a server MAY answer any other with 417, as gunicorn does, rather
                # than serve a client that expects something nobody will do.
                raise ProtocolError(f"expectation {value[:64]!r} cannot be met", 417)
        else:
            content_types += 1
    if hosts > 1 or (http11 and hosts == 0):
        raise ProtocolError("an HTTP/1.1 request needs exactly one Host field", 400)
    if content_types > 1:
        raise ProtocolError("more than one Content-Type field", 400)

    content_length = None
    chunked = False
    if codings:
        if not http11:
            raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request", 400)
        if lengths:
            raise ProtocolError("both Content-Length and Transfer-Encoding", 400)
        chunked = _transfer_codings(codings)
    elif lengths:
        if len(lengths) > 1:
            # Even with equal values: the list form "5, 5" is refused, and so
            # do gunicorn and llhttp (RFC 9110 8.6 lets a recipient refuse both).
            raise ProtocolError("more than one Content-Length field", 400)
        if _CONTENT_LENGTH.fullmatch(lengths[0]) is None:
            raise ProtocolError("invalid Content-Length", 400)
        content_length = int(lengths[0])
        if limits.body and content_length > limits.body:
            raise ProtocolError("request body too large", 413)

    if connection:
        tokens = {t.strip(_OWS) for t in connection.split(",")}
        keep_alive = "close" not in tokens and (http11 or "keep-alive" in tokens)
    else:
        keep_alive = http11
    return content_length, chunked, keep_alive, http11 and expect == "100-continue"


class _Chunk(enum.Enum):
    SIZE = "size"
    DATA = "data"
    DATA_END = "data end"
    TRAILER = "trailer"


# Module globals for the members the parser steps through per request (an
# Enum attribute lookup costs ~60 ns, and a request takes a dozen such steps).
_IDLE, _BODY, _DONE, _CLOSED = State.IDLE, State.BODY, State.DONE, State.CLOSED
_NEED_DATA, _PAUSED = Need.DATA, Need.PAUSED
_SIZE, _DATA, _DATA_END, _TRAILER = _Chunk.SIZE, _Chunk.DATA, _Chunk.DATA_END, _Chunk.TRAILER


class ServerConnection:
    """One client connection's requests, and whether it may carry another.

    Call pattern: ``receive_data`` whenever bytes (or EOF as ``b""``) arrive;
    ``next_event`` until it returns ``_NEED_DATA``; answer each ``Request``
    through a ``response.ResponseWriter`` on this connection; then
    ``start_next_cycle`` to read the next (possibly already buffered)
    request if ``keep_alive`` still holds.
    """

    __slots__ = (
        "_body_seen", "_buf", "_checked", "_chunk", "_continue_pending", "_empty_lines", "_eof",
        "_error", "_head_lines", "_line_checked", "_line_start", "_max_head", "_remaining",
        "_trailer_fields", "keep_alive", "limits", "request", "state",
    )

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._max_head = self.limits.head
        self.state = _IDLE
        self.request: Request | None = None
        self._buf = bytearray()
        self._eof = False
        self._error: ProtocolError | None = None
        self._checked = 0  # head bytes already checked for bare LF and line sizes
        self._line_start = 0  # start of the head line being received
        self._head_lines = 0  # complete lines in the partial head (request line included)
        self._empty_lines = 0  # empty lines ignored before the request line being awaited
        # body
        self._remaining = 0  # Content-Length left, or bytes left in this chunk
        self._chunk = _SIZE
        self._body_seen = 0
        self._trailer_fields = 0
        self._line_checked = 0  # bytes of the chunk-framing line already searched
        # Whether this connection may carry another request after the current one.
        self.keep_alive = True
        self._continue_pending = False

    # --- input -----------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer received bytes; ``b""`` means the client closed its side."""
        if data:
            self._buf += data
        else:
            self._eof = True

    @property
    def buffered(self) -> int:
        """How many received bytes are not consumed yet (e.g. a pipelined request)."""
        return len(self._buf)

    def next_event(self) -> Event | Need:
        """The next event, or what is needed before one can be produced.

        A ``ProtocolError`` is final: every later call raises it again, so no
        caller can go on to read the bytes after a framing error as a request.
        """
        if self._error is not None:
            raise self._error
        try:
            if self.state is _IDLE:
                return self._next_request()
            if self.state is _BODY:
                if self.request.chunked:  # type: ignore[union-attr]
                    return self._next_chunked()
                return self._next_fixed()
        except ProtocolError as exc:
            self._error = exc
            self.state = _CLOSED
            self.keep_alive = False
            raise
        if self.state is _DONE:
            return _PAUSED
        return CONNECTION_CLOSED

    def _next_request(self) -> Event | Need:
        buf = self._buf
        if not buf:
            if self._eof:
                self.state = _CLOSED
                return CONNECTION_CLOSED
            return _NEED_DATA
        while buf.startswith(b"\r\n"):  # RFC 9112 2.2: ignore empty lines before a request
            self._empty_lines += 1
            if self._empty_lines > _EMPTY_LINES_IGNORED:
                raise ProtocolError("too many empty lines before the request line", 400)
            del buf[:2]
            self._checked = self._line_start = self._head_lines = 0
        # The bytes already checked hold no end of head: resume the search
        # there, or a head trickled in small pieces costs quadratic time.
        end = buf.find(b"\r\n\r\n", max(self._checked - 3, 0))
        if end == -1:
            self._check_partial_head()
            if self._eof:
                self.state = _CLOSED
                if buf:
                    raise ProtocolError("connection closed inside a request head", None)
                return CONNECTION_CLOSED
            return _NEED_DATA
        end += 4
        if end > self._max_head:
            raise ProtocolError("request head too large", 431)
        head = buf[:end]
        del buf[:end]
        self._checked = self._line_start = self._head_lines = self._empty_lines = 0
        request = parse_head(head, self.limits)
        self._begin(request)
        return request

    def _check_partial_head(self) -> None:
        """Refuse a head that can no longer become valid, without waiting for it."""
        buf = self._buf
        if _BARE_LF.search(buf, max(self._checked - 1, 0)):
            raise ProtocolError("bare LF in request head", 400)
        # Lines completed since the last check are held to their limits now,
        # not when the head ends: a long line that arrives with its CRLF must
        # be refused as surely as one still arriving. (At most fields + 1
        # lines pass here before the count refuses them.)
        limits = self.limits
        lines = self._head_lines
        line_start = self._line_start
        lf = buf.find(b"\n", self._checked)
        while lf != -1:
            length = lf - 1 - line_start  # without its CRLF
            if lines == 0:
                # Complete, and free of bare LFs (checked above): judged now.
                request_line(str(buf[:lf + 1], "latin-1"), lf - 1, limits)
            elif length > limits.field_size - 2:
                raise ProtocolError("header field too large", 431)
            lines += 1
            if lines - 1 > limits.fields:
                raise ProtocolError("too many header fields", 431)
            line_start = lf + 1
            lf = buf.find(b"\n", line_start)
        self._head_lines = lines
        self._line_start = line_start
        self._checked = len(buf)
        if self._line_start == 0:
            if len(buf) > self.limits.request_line + 2:
                raise _overlong_request_line(self._line_text(len(buf)),
                                             self.limits.request_line)
        elif len(buf) - self._line_start > self.limits.field_size:
            raise ProtocolError("header field too large", 431)
        if len(buf) > self._max_head:
            raise ProtocolError("request head too large", 431)

    def _line_text(self, end: int) -> str:
        """The request line received so far, up to ``end``, to judge it by (without
        a last CR, which may be the start of its CRLF)."""
        text = str(self._buf[:end], "latin-1")
        return text[:-1] if text.endswith("\r") else text

    def _begin(self, request: Request) -> None:
        self.request = request
        self.keep_alive = request.keep_alive
        if request.chunked:
            self._continue_pending = request.expect_continue
            self._body_seen = 0
            self._chunk = _SIZE
            self._trailer_fields = 0
            self._line_checked = 0
            self.state = _BODY
        elif request.content_length:
            self._continue_pending = request.expect_continue
            self._remaining = request.content_length
            self.state = _BODY
        else:
            self._continue_pending = False  # nothing to continue with
            self.state = _DONE

    def _next_fixed(self) -> Event | Need:
        if not self._buf:
            return self._need_body_data()
        data = self._take_body()
        if not self._remaining:
            self.state = _DONE
        return data

    def _take_body(self) -> Data:
        """Up to ``_remaining`` bytes of body from a buffer that is not empty."""
        buf = self._buf
        take = min(self._remaining, len(buf))
        data = bytes(buf[:take])
        del buf[:take]
        self._remaining -= take
        return Data(data)

    def _next_chunked(self) -> Event | Need:
        while True:
            event = self._chunk_step()
            if event is not None:
                return event

    def _chunk_step(self) -> Event | Need | None:
        """Advance the chunked decoder by one step; None means "step again"."""
        buf = self._buf
        phase = self._chunk
        if phase is _DATA:
            if not buf:
                return self._need_body_data()
            data = self._take_body()
            if not self._remaining:
                self._chunk = _DATA_END
            return data
        if phase is _DATA_END:
            if len(buf) < 2:
                return self._need_body_data()
            if buf[:2] != b"\r\n":
                raise ProtocolError("chunk data not followed by CRLF", 400)
            del buf[:2]
            self._chunk = _SIZE
            return None
        line = self._body_line(self.limits.chunk_line if phase is _SIZE
                               else self.limits.field_size)
        if line is None:
            return self._need_body_data()
        if phase is _SIZE:
            return self._chunk_size(line)
        return self._trailer(line)

    def _body_line(self, limit: int) -> bytes | None:
        """Take one CRLF-terminated line of chunk framing, or None if incomplete."""
        buf = self._buf
        # Resume where the last search stopped: a line trickled in small
        # pieces must not be searched from its start at every piece.
        start = max(self._line_checked - 1, 0)
        end = buf.find(b"\r\n", start, limit + 2)
        if end == -1:
            if len(buf) > limit + 1 or _BARE_LF.search(buf, start):
                raise ProtocolError("malformed or oversized chunk framing", 400)
            self._line_checked = len(buf)
            return None
        line = bytes(buf[:end])
        del buf[: end + 2]
        self._line_checked = 0
        return line

    def _chunk_size(self, line: bytes) -> None:
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise ProtocolError("invalid chunk size line", 400)
        size = int(match.group(1), 16)
        self._body_seen += size
        if self.limits.body and self._body_seen > self.limits.body:
            raise ProtocolError("request body too large", 413)
        if size:
            self._remaining = size
            self._chunk = _DATA
        else:
            self._chunk = _TRAILER
        return None

    def _trailer(self, line: bytes) -> EndOfMessage | None:
        if not line:
            self.state = _DONE
            return END_OF_MESSAGE
        self._trailer_fields += 1
        if self._trailer_fields > self.limits.fields:
            raise ProtocolError("too many trailer fields", 431)
        text = line.decode("latin-1") + "\r\n"
        if _FIELD_LINES.fullmatch(text) is None:
            raise ProtocolError("malformed trailer field", 400)
        name = text.partition(":")[0].upper()
        if name in _FORBIDDEN_TRAILERS:
            raise ProtocolError(f"{name} is not allowed in trailers", 400)
        return None

    def _need_body_data(self) -> Need:
        if self._eof:
            self.state = _CLOSED
            raise ProtocolError("connection closed inside a request body", None)
        return _NEED_DATA

    # --- 100-continue ----------------------------------------------------

    def continue_bytes(self) -> bytes:
        """``100 Continue`` if the client waits for it, once; else ``b""``.

        Sent when the application first reads the body, so a request it
        refuses without reading never has its body sent.
        """
        if self._continue_pending:
            self._continue_pending = False
            return _CONTINUE
        return b""

    def begin_response(self) -> bool:
        """The response to the current request starts; no ``100 Continue`` after it.

        True if the client was still waiting for one: it may or may not send
        the body now, so the connection cannot carry another request.
        """
        owed = self._continue_pending
        self._continue_pending = False
        return owed

    def abandon(self) -> None:
        """Finish with this connection after the current response (e.g. an unread body)."""
        self.keep_alive = False

    def start_next_cycle(self) -> bool:
        """Get ready for the next request; False if this connection is finished."""
        if not self.keep_alive or self.state is not _DONE:
            self.state = _CLOSED
            return False
        self.state = _IDLE
        self.request = None
        return True
