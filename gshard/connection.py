"""One client socket served to the end: the only place that calls recv and send.

It joins a gevent socket to the sans-IO ``protocol``, ``proxy`` and ``wsgi``
helpers, and owns what needs a clock or a socket: the PROXY protocol header
and the TLS handshake before the first request, keep-alive, timeouts,
100-continue on first read, sendfile, and closing without losing a response.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gevent import Timeout
from gevent.socket import wait_write

from gshard.errors import ProtocolError
from gshard.log import AccessAtoms, AccessLogger, error_log
from gshard.protocol import (
    CONNECTION_CLOSED,
    Data,
    Limits,
    Need,
    Request,
    ServerConnection,
    State,
    error_response,
)
from gshard.proxy import MAX_HEADER, Forwarded, ProxyProtocol, parse_proxy_header
from gshard.wsgi import EMPTY_INPUT, FileWrapper, InputStream, ResponseStart, make_environ

RECV_SIZE = 65536
# A response this small is joined with its head and sent in one write.
JOIN_LIMIT = 65536
# Unread request body we read and discard to keep a connection; past it, close.
DISCARD_LIMIT = 256 * 1024
# After refusing a request, how long and how much we keep reading so the
# client receives our response before the close (a close with unread input
# makes the kernel send RST, which can destroy the response in flight).
LINGER_SECONDS = 2.0
# Past the first --body-timeout seconds, a request body must average at least
# this many bytes a second (Apache's RequestReadTimeout uses 500).
MIN_BODY_RATE = 512
LINGER_BYTES = 256 * 1024

_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


def _may_add_length(status: str) -> bool:
    """Whether the server may add a Content-Length of its own (RFC 9110 8.6).

    Never on 1xx and 204; on a 304 it would have to be the length of the 200
    response, which only the application knows.
    """
    code = int(status[:3])
    return code >= 200 and code not in (204, 304)


@dataclass
class Lifecycle:
    """Shard-wide serving state the connections consult.

    ``draining`` makes every response end its connection; ``idle`` maps the
    sockets parked between keep-alive requests to when they parked, so the
    shard's reaper can close those idle past ``--keep-alive`` and a drain can
    close them all at once.
    """

    draining: bool = False
    handled: int = 0
    idle: dict = field(default_factory=dict)


@dataclass
class ServeContext:
    """What a connection needs from its shard and listener."""

    app: Callable
    base_environ: dict[str, Any]
    limits: Limits
    keepalive: float
    header_timeout: float
    body_timeout: float
    access: AccessLogger
    lifecycle: Lifecycle
    # An ssl.SSLContext (typed Any: this module must not import ssl) on TLS listeners.
    tls: Any = None
    proxy: ProxyProtocol | None = None
    forwarded: Forwarded | None = None


class Connection:
    """Serves requests on one socket until either side ends it."""

    __slots__ = (
        "body_bytes", "body_since", "ctx", "forwarded", "io_failed", "proto", "raw", "remote",
        "response", "sent", "sock",
    )

    def __init__(self, sock: socket.socket, remote: tuple[str, str], ctx: ServeContext) -> None:
        self.sock = sock
        # The non-blocking socket under gevent's wrapper, for sends that need no
        # wait. None under TLS: it and sendfile would write around the encryption.
        self.raw = sock._sock
        self.remote = remote
        # What the peer's forwarded headers may change; None if they change nothing.
        self.forwarded: Forwarded | None = None
        self.ctx = ctx
        self.proto = ServerConnection(ctx.limits)
        self.response: ResponseStart | None = None
        self.sent = 0
        # The request body being read: when its first wait began, bytes so far.
        self.body_since: float | None = None
        self.body_bytes = 0
        # Set when a send or receive on the client socket fails, so an OSError
        # the application raises itself (an upstream timeout) is not mistaken
        # for the client going away.
        self.io_failed = False

    def serve(self) -> None:
        linger = False
        try:
            linger = self._start()
        except _CLIENT_GONE:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EBADF, errno.ENOTCONN, errno.EPIPE):
                error_log.debug("connection from %s ended: %s", self.remote[0], exc)
        finally:
            self._close(linger)

    def _start(self) -> bool:
        """Read the PROXY header and shake hands if the listener asks, then serve.

        The PROXY header, the TLS handshake and the first request head share
        one ``--header-timeout``: a connection has that long to become a
        request, whatever it trickles. Both run here, in the connection's
        greenlet, so a slow or hostile client never holds up the accept loop.
        """
        ctx = self.ctx
        deadline = time.monotonic() + ctx.header_timeout
        if ctx.proxy is not None:
            try:
                if not self._read_proxy_header(ctx.proxy, deadline):
                    return False
            except ProtocolError as exc:
                if ctx.tls is not None:
                    exc.status = None  # a plain-text 400 means nothing to a TLS client
                self._refuse(exc)
                return exc.status is not None
        if ctx.tls is not None and not self._handshake(ctx.tls, deadline):
            return False
        forwarded = ctx.forwarded
        if forwarded is not None and forwarded.trusted.allows(self.remote[0]):
            self.forwarded = forwarded
        return self._serve(deadline)

    def _read_proxy_header(self, proxy: ProxyProtocol, deadline: float) -> bool:
        """Take the PROXY header off the stream and adopt the client it names.

        False if the peer left (or sent nothing in time) before a header.
        Raises ``ProtocolError`` for a peer not allowed to send one, a
        malformed or oversized header, or none at all.

        The bytes are peeked before they are read, and only the header's are
        read: what follows belongs to the request, or to the TLS handshake,
        which must find it still in the socket.
        """
        peer = self.remote[0]
        if not proxy.allowed.allows(peer):
            raise ProtocolError("PROXY protocol connection from a peer that "
                                "--proxy-allow-from does not list")
        sock = self.sock
        taken = b""  # header bytes already read off the socket
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                peeked = sock.recv(MAX_HEADER - len(taken), socket.MSG_PEEK)
            except TimeoutError:
                if not taken:
                    return False
                raise ProtocolError("PROXY protocol header not received in time") from None
            if not peeked:
                return False
            header = parse_proxy_header(taken + peeked, proxy.mode)
            # All of an incomplete header's bytes are the header's: take them
            # (peeking again would return them at once) and wait for the rest.
            count = len(peeked) if header is None else header.length - len(taken)
            while count > 0:
                taken_now = len(sock.recv(count))  # already peeked: no wait
                if not taken_now:
                    return False
                count -= taken_now
            if header is not None:
                break
            taken += peeked
        if header.client is not None:
            self.remote = header.client
        return True

    def _handshake(self, context: Any, deadline: float) -> bool:
        """The TLS handshake; False (logged at debug) if it fails or takes too long."""
        self.raw = None
        remaining = max(deadline - time.monotonic(), 0.001)
        timer = Timeout(remaining, TimeoutError)  # the whole handshake, not each read
        timer.start()
        try:
            sock = self.sock = context.wrap_socket(
                self.sock, server_side=True, do_handshake_on_connect=False
            )
            sock.settimeout(remaining)
            sock.do_handshake()
        except (OSError, ValueError) as exc:
            error_log.debug("TLS handshake with %s failed: %s", self.remote[0] or "unix socket",
                            exc or type(exc).__name__)
            return False
        finally:
            timer.close()
        return True

    def _serve(self, deadline: float) -> bool:
        """Serve requests in order; True if input may be left unread at the end."""
        while True:
            try:
                request = self._read_request(deadline)
            except ProtocolError as exc:
                self._refuse(exc)
                return True
            if request is None:
                return False
            self._respond(request)
            self.ctx.lifecycle.handled += 1
            if self.ctx.lifecycle.draining:
                self.proto.abandon()
            if self.proto.keep_alive and self.proto.state is State.BODY:
                self._discard_body()
            unread = self.proto.state is State.BODY or self.proto.buffered > 0
            if not self.proto.start_next_cycle():
                return unread
            deadline = None

    # --- reading -------------------------------------------------------

    def _read_request(self, deadline: float | None) -> Request | None:
        """The next request head, or None when the connection ended cleanly.

        Between requests the wait is ``keepalive``; once a request has begun
        (or on a fresh connection) the whole head must arrive before
        ``deadline``, so a client trickling bytes cannot hold a greenlet.
        """
        proto = self.proto
        while True:
            event = proto.next_event()
            if event is not Need.DATA:
                return None if event is CONNECTION_CLOSED else event  # type: ignore[return-value]
            if deadline is None and proto.buffered == 0:
                if not self._wait_idle():
                    return None
                deadline = time.monotonic() + self.ctx.header_timeout
                continue
            if deadline is None:
                deadline = time.monotonic() + self.ctx.header_timeout
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                self.sock.settimeout(remaining)
                proto.receive_data(self.sock.recv(RECV_SIZE))
            except TimeoutError:
                if proto.buffered == 0:
                    return None  # nothing was asked: close without a word, as nginx does
                raise ProtocolError("request head not received in time", 408) from None

    def _wait_idle(self) -> bool:
        """Wait for the next request's first bytes, parked in the shard's idle map.

        The wait has no timer of its own: the shard's reaper shuts down a
        socket idle past ``--keep-alive``, which ends this recv. (A socket timeout
        would start and cancel a gevent timer on every keep-alive request;
        measured in one process, that cost ~7 us of a ~55 us round trip.)
        """
        lifecycle = self.ctx.lifecycle
        if lifecycle.draining:
            return False
        if self.sock.timeout is not None:
            self.sock.settimeout(None)
        lifecycle.idle[self.sock] = time.monotonic()
        try:
            data = self.sock.recv(RECV_SIZE)
        except OSError:
            return False
        finally:
            lifecycle.idle.pop(self.sock, None)
        self.proto.receive_data(data)
        return bool(data)

    def _pull_body(self) -> bytes:
        """Next piece of the request body for ``wsgi.input``; ``b""`` at its end.

        A broken or late body ends the connection even if the application
        catches the error (Flask turns it into its own 500): past a framing
        error, the bytes that follow are not requests.
        """
        try:
            return self._next_body_piece()
        except ProtocolError:
            self.proto.abandon()
            raise

    def _next_body_piece(self) -> bytes:
        proto = self.proto
        interim = proto.continue_bytes()
        if interim:
            self._sendall(interim)
        while True:
            event = proto.next_event()
            if type(event) is Data:
                self.body_bytes += len(event.data)
                return event.data
            if event is not Need.DATA:
                return b""
            self.sock.settimeout(self._body_wait())
            try:
                proto.receive_data(self.sock.recv(RECV_SIZE))
            except TimeoutError:
                raise ProtocolError("request body not received in time", 408) from None
            except OSError:
                self.io_failed = True
                raise

    def _body_wait(self) -> float:
        """How long the next body read may wait.

        Each wait is bounded by ``--body-timeout``, and so is the whole body
        beyond what MIN_BODY_RATE allows for the bytes already received: a
        client trickling a byte now and then cannot hold the connection forever.
        """
        now = time.monotonic()
        if self.body_since is None:
            self.body_since = now
        allowed = self.ctx.body_timeout + self.body_bytes / MIN_BODY_RATE
        remaining = self.body_since + allowed - now
        if remaining <= 0:
            raise ProtocolError("request body arriving too slowly", 408)
        return min(self.ctx.body_timeout, remaining)

    def _discard_body(self) -> None:
        """Read what the application left of the body, so the connection stays usable."""
        budget = DISCARD_LIMIT
        try:
            while budget > 0:
                piece = self._pull_body()
                if not piece:
                    return
                budget -= len(piece)
        except (ProtocolError, OSError):
            pass
        self.proto.abandon()

    # --- responding ----------------------------------------------------

    def _respond(self, request: Request) -> None:
        ctx = self.ctx
        started = time.perf_counter()
        if self.proto.state is State.DONE:
            wsgi_input = EMPTY_INPUT
        else:
            self.body_since = None
            self.body_bytes = 0
            wsgi_input = InputStream(self._pull_body)
        environ = make_environ(request, ctx.base_environ, wsgi_input, self.remote)
        response = self.response = ResponseStart(self._write)
        self.sent = 0
        result = None
        try:
            if self.forwarded is not None:
                self.forwarded.apply(environ, request.headers)
            result = ctx.app(environ, response)
            self._send_result(result)
        except ProtocolError as exc:
            # The client broke the body while the application read it.
            self.proto.abandon()
            if response.headers_sent:
                raise ConnectionAbortedError from exc
            self._refuse(exc, log_request=request)
            response.status = f"{exc.status or 400} -"
        except Exception as exc:
            if isinstance(exc, _CLIENT_GONE) and self.io_failed:
                raise
            error_log.exception("Error handling request %s %s", request.method, request.target)
            self.proto.abandon()
            if response.headers_sent:
                raise ConnectionAbortedError from None
            self._sendall(error_response(500))
            response.status = "500 Internal Server Error"
        finally:
            if hasattr(result, "close"):
                try:
                    result.close()
                except Exception:
                    error_log.exception("Error closing the response of %s", request.target)
        if ctx.access.enabled:
            ctx.access.log(AccessAtoms(
                environ, response.status or "-", response.headers, self.sent,
                time.perf_counter() - started,
            ))

    def _send_result(self, result: Iterable[bytes]) -> None:
        response = self.response
        if type(result) in (list, tuple) and response.status is not None:
            self._send_whole(result)  # type: ignore[arg-type]
        elif type(result) is FileWrapper and self._sendfile(result):
            pass
        else:
            for data in result:
                if data:
                    self._write(data)
                elif response.status is None:
                    raise AssertionError("application yielded before start_response")
        if response.status is None:
            raise AssertionError("application returned without calling start_response")
        proto = self.proto
        tail = b"" if response.headers_sent else self._head(empty=True)
        tail += proto.response_end()
        if tail:
            self._sendall(tail)

    def _send_whole(self, body_parts: list[bytes] | tuple[bytes, ...]) -> None:
        """A response known in full: one write for head and body when it is small."""
        total = 0
        for part in body_parts:
            if type(part) is not bytes:
                raise TypeError(f"response body items must be bytes, not {type(part).__name__}")
            total += len(part)
        response = self.response
        if response.headers_sent or total > JOIN_LIMIT:
            for part in body_parts:
                if part:
                    self._write(part)
            return
        if response.content_length is None and _may_add_length(response.status):
            response.headers = [*response.headers, ("Content-Length", str(total))]
            response.content_length = total
        body = body_parts[0] if len(body_parts) == 1 else b"".join(body_parts)
        out = self._head() + self.proto.response_data(body)
        self.sent = total
        self._sendall(out)

    def _head(self, empty: bool = False) -> bytes:
        """The response head, once; ``empty`` when the body is known to be empty."""
        response = self.response
        response.headers_sent = True
        if empty and response.content_length is None and _may_add_length(response.status):
            response.headers = [*response.headers, ("Content-Length", "0")]
            response.content_length = 0
        return self.proto.response_head(
            response.status,
            response.headers,
            response.content_length,
            # --keep-alive 0 means no persistent connections, as in gunicorn.
            close=response.close or self.ctx.lifecycle.draining or not self.ctx.keepalive,
            add_date=not response.has_date,
            add_server=not response.has_server,
        )

    def _write(self, data: bytes) -> None:
        """PEP 3333's ``write`` callable, also used for each item of the body."""
        response = self.response
        if response.status is None:
            raise AssertionError("write() called before start_response")
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise TypeError(f"response body must be bytes, not {type(data).__name__}")
            data = bytes(data)
        # The head first: it decides how the body is framed (chunked, length, none).
        head = b"" if response.headers_sent else self._head()
        framed = head + self.proto.response_data(data)
        self.sent += len(data)
        if framed:
            self._sendall(framed)

    def _sendfile(self, wrapper: FileWrapper) -> bool:
        """Send a regular file with os.sendfile; False to fall back to iterating."""
        if self.raw is None:
            return False  # TLS: the kernel would send the file unencrypted
        try:
            fd = wrapper.filelike.fileno()
            info = os.fstat(fd)
            offset = os.lseek(fd, 0, os.SEEK_CUR)
        except (AttributeError, OSError, ValueError):
            return False
        if not stat.S_ISREG(info.st_mode) or self.proto.request.method == "HEAD":
            return False
        response = self.response
        if response.status is None or not _may_add_length(response.status):
            return False  # iterating drops the body of a 204 or 304
        size = max(info.st_size - offset, 0)
        if response.content_length is None:
            response.headers = [*response.headers, ("Content-Length", str(size))]
            response.content_length = size
        # The declared length bounds what we send; the framing below is identity.
        count = min(size, response.content_length)
        self.sock.settimeout(self.ctx.body_timeout)
        self._sendall(self._head())
        sock_fd = self.sock.fileno()
        while count > 0:
            try:
                n = os.sendfile(sock_fd, fd, offset, count)
            except BlockingIOError:
                try:
                    wait_write(sock_fd, timeout=self.ctx.body_timeout)
                except OSError:
                    self.io_failed = True
                    raise
                continue
            except OSError:
                self.io_failed = True
                raise
            if n == 0:
                break
            offset += n
            count -= n
            self.sent += n
            self.proto.count_body(n)
        return True

    def _sendall(self, data: bytes) -> None:
        """Send to the client; a failure is the client's, never the application's.

        A response usually fits the socket buffer, so one non-blocking send on
        the raw socket finishes it; gevent's ``sendall`` (which waits, and asks
        the kernel for the buffer size on every call) only sends what is left.
        """
        raw = self.raw
        try:
            try:
                sent = raw.send(data) if raw is not None else 0
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                self.sock.settimeout(self.ctx.body_timeout)
                self.sock.sendall(memoryview(data)[sent:])
        except OSError:
            self.io_failed = True
            raise

    # --- refusing and closing ------------------------------------------

    def _refuse(self, exc: ProtocolError, log_request: Request | None = None) -> None:
        """Answer a request we cannot serve with its 4xx/5xx, then let the caller close."""
        error_log.info(
            "Bad request from %s: %s%s", self.remote[0], exc,
            f" ({log_request.method} {log_request.target})" if log_request else "",
        )
        if exc.status is not None and not self.proto.response_started:
            self._sendall(error_response(exc.status))

    def _close(self, linger: bool) -> None:
        sock = self.sock
        try:
            if linger:
                sock.shutdown(socket.SHUT_WR)
                self._drain_input()
        except OSError:
            pass
        finally:
            sock.close()

    def _drain_input(self) -> None:
        """Read and drop what the client still sends, briefly, before closing."""
        deadline = time.monotonic() + LINGER_SECONDS
        budget = LINGER_BYTES
        while budget > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(RECV_SIZE)
            except (TimeoutError, OSError):
                return
            if not data:
                return
            budget -= len(data)
