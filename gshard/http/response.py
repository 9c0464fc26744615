"""HTTP/1.1 response framing with no I/O: one writer per response.

The request side (``protocol.py``) turns bytes into requests; this is the
other half. A ``ResponseWriter`` turns a response's head, body pieces and end
into the bytes to send, and makes every framing decision on the way, so the
code that owns the socket never looks inside (RFC 9112 6, RFC 9110 8.6):

* which statuses and methods carry no body (1xx, 204, 304; HEAD);
* whether the server may add a Content-Length (never on 1xx, 204 and 304:
  on a 304 it would have to be the 200's length, which only the application
  knows), and adds one when the whole body is known before the head;
* identity with a length, chunked, or delimited by the close (HTTP/1.0);
* ``Connection: close`` or ``keep-alive``, and whether the connection can
  carry another request once the response ends (not if the body fell short
  of its Content-Length, or the client still waits for ``100 Continue``);
* the status the access log records, including refusals.
"""

from __future__ import annotations

import enum
import time
from email.utils import formatdate
from http import HTTPStatus

from gshard.http.protocol import ServerConnection


class Framing(enum.Enum):
    """How the body of a response is delimited on the wire."""

    NONE = "none"  # no body follows the head: a HEAD request, or 1xx/204/304
    LENGTH = "length"  # Content-Length: exactly that many bytes; excess is cut
    CHUNKED = "chunked"  # Transfer-Encoding: chunked
    CLOSE = "close"  # HTTP/1.0 without a length: closing the connection ends it


class Phase(enum.Enum):
    """Where a response is."""

    HEAD = "head"  # nothing sent yet; a refusal may still replace the response
    BODY = "body"  # the head is out; body pieces go out framed as ``framing``
    DONE = "done"  # the end is out; ``ServerConnection.keep_alive`` says what follows


# The members as module globals: looking a member up on its Enum class costs
# ~60 ns, and every response takes several such steps.
_HEAD, _BODY, _DONE = Phase.HEAD, Phase.BODY, Phase.DONE
_NONE, _LENGTH, _CHUNKED, _CLOSE = Framing.NONE, Framing.LENGTH, Framing.CHUNKED, Framing.CLOSE


class ResponseWriter:
    """Frames one response to the request that ``conn`` received last.

    Call ``head`` once, ``data`` per body piece, then ``end``; or ``refusal``
    instead of all three while nothing is sent. Each returns the bytes to
    send. Closing decisions are written through to ``conn``, which decides
    whether another request is read.
    """

    __slots__ = ("_conn", "_remaining", "framing", "headers", "phase", "sent", "status")

    def __init__(self, conn: ServerConnection) -> None:
        self._conn = conn
        self.phase = _HEAD
        self.framing = _NONE
        # What the access log records: the status sent, or None while none is.
        self.status: str | None = None
        # The response's fields as sent, before the server's own (Date, Server, Connection).
        self.headers: list[tuple[str, str]] = []
        # Body bytes the application produced (as gunicorn's access log counts them).
        self.sent = 0
        self._remaining = 0  # Content-Length still owed, under _LENGTH

    def head(
        self,
        status: str,
        headers: list[tuple[str, str]],
        content_length: int | None,
        close: bool = False,
        add_date: bool = True,
        add_server: bool = True,
        body_length: int | None = None,
    ) -> bytes:
        """The status line and fields, choosing how the body is framed.

        ``status`` is the WSGI status (``"200 OK"``); ``headers`` are the
        application's, already validated; ``content_length`` is the length it
        declared, if any; ``close`` asks to end the connection after this
        response; ``add_date``/``add_server`` are False when the application
        set those fields itself. ``body_length`` is the length of the whole
        body when it is known before the head (a body given in full, an empty
        one, a file): a Content-Length is then added where the status allows.
        """
        if self.phase is not _HEAD:
            raise RuntimeError("the response head was sent already")
        conn = self._conn
        request = conn.request
        assert request is not None
        code = _status_code(status)
        if conn.begin_response():
            # The client may or may not send the body it was never asked for:
            # only closing leaves no doubt about where the next request starts.
            close = True
        # Statuses that never carry a body (RFC 9110 15.2, 15.3.5, 15.4.5).
        no_body = code < 200 or code == 204 or code == 304
        version = request.http_version
        http11 = version == "HTTP/1.1"
        parts = [_status_line(version, status)]
        for field in headers:
            line = _field_lines.get(field)
            parts.append(line if line is not None else _field_line(field))
        if content_length is None and body_length is not None and not no_body:
            length = str(body_length)
            headers = [*headers, ("Content-Length", length)]
            parts += ("Content-Length: ", length, "\r\n")  # a new value each time: not cached
            content_length = body_length
        if no_body or request.method == "HEAD":
            framing = _NONE
            if not no_body and content_length is None and not http11:
                close = True  # as for a GET of the same resource: the close would end it
        elif content_length is not None:
            framing = _LENGTH
            self._remaining = content_length
        elif http11:
            framing = _CHUNKED
            parts.append("Transfer-Encoding: chunked\r\n")
        else:
            framing = _CLOSE
            close = True
        if close:
            conn.abandon()
        if not conn.keep_alive:
            if http11 or request.keep_alive:
                parts.append("Connection: close\r\n")
        elif not http11:
            parts.append("Connection: keep-alive\r\n")
        if add_date:
            parts += ("Date: ", http_date(), "\r\n")
        if add_server:
            parts.append("Server: gshard\r\n")
        parts.append("\r\n")
        self.framing = framing
        self.phase = _BODY
        self.status = status
        self.headers = headers
        return "".join(parts).encode("latin-1")

    def data(self, data: bytes) -> bytes:
        """A piece of the body as it goes on the wire (nothing, where no body is sent)."""
        self.sent += len(data)
        framing = self.framing
        if framing is _LENGTH:
            if len(data) > self._remaining:
                data = data[: self._remaining]
            self._remaining -= len(data)
            return data
        if framing is _CHUNKED:
            return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        if framing is _CLOSE:
            return data
        return b""

    def complete(self) -> bool:
        """Whether the body sent so far is all the framing lets follow the head: a
        length reached, or no body at all."""
        framing = self.framing
        return framing is _NONE or (framing is _LENGTH and self._remaining == 0)

    def file_bytes(self, size: int) -> int:
        """How many bytes of a ``size``-byte file to send as the body unframed (sendfile)."""
        if self.framing is _LENGTH:
            return min(size, self._remaining)
        return 0

    def file_sent(self, count: int) -> None:
        """Record body bytes that went out past ``data`` (sendfile)."""
        self.sent += count
        self._remaining -= count

    def end(self) -> bytes:
        """The bytes that end the response."""
        self.phase = _DONE
        if self.framing is _LENGTH and self._remaining:
            # Fewer bytes than the Content-Length promised: only a close ends it.
            self._conn.abandon()
        return b"0\r\n\r\n" if self.framing is _CHUNKED else b""

    def refusal(self, code: int) -> bytes:
        """A complete error response in place of one not started; the connection then closes."""
        if self.phase is not _HEAD:
            raise RuntimeError("the response head was sent already")
        self._conn.begin_response()
        self._conn.abandon()
        self.phase = _DONE
        self.status = f"{code} {HTTPStatus(code).phrase}"
        return error_response(code)


_status_lines: dict[tuple[str, str], str] = {}
_status_codes: dict[str, int] = {}


def _status_code(status: str) -> int:
    """200 for ``"200 OK"``, parsed once per status (bounded cache)."""
    code = _status_codes.get(status)
    if code is None:
        code = int(status[:3])
        if len(_status_codes) < 1024:
            _status_codes[status] = code
    return code


def _status_line(version: str, status: str) -> str:
    """``HTTP/1.1 200 OK\r\n``, built once per version and status (bounded cache)."""
    line = _status_lines.get((version, status))
    if line is None:
        line = f"{version} {status}\r\n"
        if len(_status_lines) < 1024:  # applications may invent statuses; stay bounded
            _status_lines[version, status] = line
    return line


# Response fields as rendered lines: applications send the same few on
# every response. Bounded in count and value length, like wsgi's cache of
# validated fields.
_field_lines: dict[tuple[str, str], str] = {}


def _field_line(field: tuple[str, str]) -> str:
    line = f"{field[0]}: {field[1]}\r\n"
    if len(_field_lines) < 4096 and len(field[1]) <= 256:
        _field_lines[field] = line
    return line


def error_response(code: int) -> bytes:
    """A complete response refusing a request, for when no request may be answered.

    It always closes the connection: after a framing error nobody can tell
    where the next request would start.
    """
    phrase = HTTPStatus(code).phrase
    body = f"{phrase}\n"
    return (
        f"HTTP/1.1 {code} {phrase}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        f"Date: {http_date()}\r\nServer: gshard\r\n\r\n{body}"
    ).encode("latin-1")


_date_cache: list = [0, ""]


def http_date() -> str:
    """The IMF-fixdate for now, formatted at most once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True)
    return _date_cache[1]
