"""A strict raw-socket HTTP/1.x client for tests that must see the bytes.

``requests`` hides framing (it reuses or drops connections, de-chunks, skips
100 Continue); these tests need to know exactly where one response ends and
the next begins, whether a connection was closed, and whether a chunked body
was terminated. Every read has a deadline.
"""

from __future__ import annotations

import random
import select
import socket
import ssl
import time
from dataclasses import dataclass

DEFAULT_TIMEOUT = 5.0


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool = False
    complete: bool = True  # False: the connection ended before the body did

    def header(self, name: str) -> str | None:
        """The value of the (single) header ``name``, case-insensitively."""
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, f"{name} appears {len(values)} times: {self.headers}"
        return values[0] if values else None


class Closed(Exception):
    """The server closed the connection where a response was expected."""


class Conn:
    """One client connection with its own receive buffer."""

    def __init__(self, sock: socket.socket, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sock = sock
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        # The TLS stream ended without a closure alert (close_notify), so its
        # last bytes cannot be told from a truncation (RFC 9112 9.8); only a
        # socket wrapped with suppress_ragged_eofs=False can tell.
        self.unclean_close = False

    @classmethod
    def tcp(cls, port: int, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT) -> Conn:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, timeout)

    @classmethod
    def unix(cls, path: str, timeout: float = DEFAULT_TIMEOUT) -> Conn:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
        return cls(sock, timeout)

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_reading(self, data: bytes, timeout: float | None = None) -> Exception | None:
        """Send ``data`` while taking what the server answers into the buffer.

        For a request the server may answer, or give up on, before it has read
        it all: ``send`` could then wait forever on a full window, or lose the
        answer to a reset. One thread does both because an SSL socket must not
        be read and written from two threads at once. Returns the error that
        stopped the sending (the server closed), or None once all was sent.
        """
        deadline = time.monotonic() + (timeout or self.timeout)
        view = memoryview(data)
        sent = 0
        would_block = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
        self.sock.setblocking(False)
        try:
            while sent < len(data) and not self.eof:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"sent {sent} of {len(data)} bytes in time")
                readable, writable, _ = select.select([self.sock], [self.sock], [], remaining)
                if readable:
                    try:
                        piece = self.sock.recv(65536)
                    except would_block:
                        piece = None
                    except ConnectionResetError as exc:
                        self.eof = True
                        return exc
                    except ssl.SSLEOFError as exc:
                        self.eof = self.unclean_close = True
                        return exc
                    if piece == b"":
                        self.eof = True
                    elif piece:
                        self.buf += piece
                if writable and not self.eof:
                    try:
                        sent += self.sock.send(view[sent:sent + 65536])
                    except would_block:
                        pass
                    except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError) as exc:
                        return exc
            return None if sent == len(data) else Closed(f"closed after {sent} bytes")
        finally:
            self.sock.settimeout(self.timeout)

    # --- reading -----------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        """Receive more bytes; False at EOF. Raises TimeoutError past ``deadline``."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from the server in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        except ssl.SSLEOFError:
            data = b""
            self.unclean_close = True
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take_line(self, deadline: float) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill(deadline):
                raise Closed(f"connection closed inside a line; pending {self.buf[:200]!r}")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _take(self, size: int, deadline: float) -> bytes | None:
        while len(self.buf) < size:
            if not self._fill(deadline):
                return None
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def read_head(self, timeout: float | None = None) -> Response:
        """The next response head (status line and fields), body left unread."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise Closed(f"connection closed before a response head; got {self.buf[:200]!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        assert version in ("HTTP/1.0", "HTTP/1.1"), f"bad status line {lines[0]!r}"
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep and name == name.strip(), f"bad header line {line!r}"
            headers.append((name, value.strip()))
        return Response(version, int(status), reason[0] if reason else "", headers, b"")

    def read_response(self, method: str = "GET", timeout: float | None = None) -> Response:
        """The next final response with its body, framed as RFC 9112 6.3 says.

        Interim (1xx) responses are returned too; the caller decides. A body
        cut short by a close gives ``complete=False`` instead of raising.
        """
        deadline = time.monotonic() + (timeout or self.timeout)
        response = self.read_head(timeout)
        if method == "HEAD" or response.status < 200 or response.status in (204, 304):
            return response
        coding = response.header("Transfer-Encoding")
        length = response.header("Content-Length")
        if coding is not None:
            assert coding.lower() == "chunked", f"unexpected Transfer-Encoding {coding!r}"
            assert length is None, "both Transfer-Encoding and Content-Length"
            response.chunked = True
            response.body, response.complete = self._read_chunked(deadline)
        elif length is not None:
            body = self._take(int(length), deadline)
            if body is None:
                response.body, self.buf, response.complete = self.buf, b"", False
            else:
                response.body = body
        else:
            while self._fill(deadline):
                pass
            response.body, self.buf = self.buf, b""
        return response

    def _read_chunked(self, deadline: float) -> tuple[bytes, bool]:
        body = b""
        try:
            while True:
                size_line = self._take_line(deadline)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while self._take_line(deadline):  # trailers, up to the empty line
                        pass
                    return body, True
                data = self._take(size + 2, deadline)
                if data is None:
                    return body + self.buf, False
                assert data.endswith(b"\r\n"), f"chunk not followed by CRLF: {data[-8:]!r}"
                body += data[:-2]
        except Closed:
            return body, False

    def wait_closed(self, timeout: float = 3.0, alert: bool = True) -> bool:
        """True if the server closes the connection within ``timeout`` sending nothing more.

        Fails the test if bytes arrive instead, or (unless ``alert`` is False)
        if a TLS server closes without a closure alert (RFC 9112 9.8: servers
        MUST attempt one); False if it stays open.
        """
        assert not self.buf, f"unexpected bytes from the server: {self.buf[:200]!r}"
        deadline = time.monotonic() + timeout
        try:
            closed = not self._fill(deadline)
        except TimeoutError:
            return False
        assert closed and not self.buf, f"unexpected bytes from the server: {self.buf[:200]!r}"
        assert not (alert and self.unclean_close), "the server closed TLS without a closure alert"
        return True


def fetch(port: int, path: str = "/", timeout: float = DEFAULT_TIMEOUT) -> Response:
    """One GET on a connection of its own (``Connection: close``), so each
    lands on whichever shard the kernel picks for a new client port."""
    with Conn.tcp(port, timeout=timeout) as conn:
        conn.send(request_bytes("GET", path, headers=(("Connection", "close"),)))
        return conn.read_response()


def read_to_eof(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Everything the server sends until it closes; (data, closed within ``timeout``).

    A reset counts as the close: a server may reset a connection it closes
    with bytes of ours unread.
    """
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data, False
        sock.settimeout(remaining)
        try:
            piece = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        except TimeoutError:
            return data, False
        if not piece:
            return data, True
        data += piece


def request_bytes(method: str, path: str, version: str = "HTTP/1.1",
                  headers: tuple[tuple[str, str], ...] = (), body: bytes = b"",
                  host: bool = True) -> bytes:
    """A request with ``Host`` (unless told not to) and a Content-Length for a body."""
    lines = [f"{method} {path} {version}"]
    if host:
        lines.append("Host: test")
    lines += [f"{name}: {value}" for name, value in headers]
    if body and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(pieces: list[bytes]) -> bytes:
    """``pieces`` as a chunked body, each its own chunk, with the last chunk and no trailers."""
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces if piece) \
        + b"0\r\n\r\n"


TLS_CLIENT_HELLO_START = bytes.fromhex("1603010200010001fc0303")


def garbage(rng: random.Random, body_path: str = "/") -> bytes:
    """One connection's worth of hostile bytes, never a whole request.

    Random bytes, a TLS hello, a head or a body cut short, noise shaped like
    HTTP, heads past their limits, chunked bodies with broken sizes, NULs and
    bare line feeds. ``body_path`` is where the POSTs go, a path of the
    application under test that reads bodies.
    """
    kind = rng.randrange(11)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 65536))
    if kind == 1:
        return TLS_CLIENT_HELLO_START + rng.randbytes(rng.randrange(500))
    raw = request_bytes("POST", body_path, body=b"b" * 200)
    if kind == 2:  # a head cut anywhere, then noise
        return raw[: rng.randrange(1, len(raw) - 200)] + rng.randbytes(rng.randrange(1, 200))
    if kind == 3:  # a body cut short: the client goes before sending the rest
        return raw[: rng.randrange(len(raw) - 200, len(raw))]
    if kind == 4:  # printable noise with line breaks
        alphabet = b"GETPOST/ :\r\n\t0123456789abcdefHTTP/1.1;=\"-"
        return bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 4000)))
    if kind == 5:  # a field line far past its limit
        return b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"x" * rng.randrange(8000, 40000)
    chunked = f"POST {body_path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    if kind == 6:  # noise for chunk sizes
        return chunked.encode() + rng.randbytes(rng.randrange(1, 2000))
    if kind == 7:  # a chunk size that is no number
        return chunked.encode() + b"zz\r\n" + rng.randbytes(100)
    if kind == 8:  # many fields
        return b"GET / HTTP/1.1\r\n" + b"X-F: v\r\n" * rng.randrange(50, 400)
    if kind == 9:  # NULs and bare line feeds
        return b"GET /\x00 HTTP/1.1\nHost: a\n\n"
    return b"\r\n" * rng.randrange(1, 3000) + rng.randbytes(100)
