"""One request and its response: the WSGI cycle, with the socket left outside.

An ``Exchange`` is made per request and dropped after it. It builds the
environ, calls the application, and sends what the application returns
through a ``ResponseWriter`` and the connection's ``Transport``: the only I/O
it does is asking the transport to send bytes, send a file or receive the
next piece of the body. Every PEP 3333 rule about
the result (a list known in full, ``write()``, ``wsgi.file_wrapper``,
``close()``, errors before and after the head) is applied here, testable
without a network.

Once finished, the exchange is the record of the request that the access
log and anything else in ``ServeContext.finished`` reads: method, target,
status, bytes sent, body bytes received, duration, and how it ended.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterable
from time import perf_counter
from typing import Protocol

from gshard.errors import ClientDisconnected, ProtocolError
from gshard.http.context import ServeContext
from gshard.http.protocol import Request, ServerConnection, State
from gshard.http.proxy import Forwarded
from gshard.http.response import Phase, ResponseWriter
from gshard.http.wsgi import EMPTY_INPUT, FileWrapper, InputStream, ResponseStart, make_environ
from gshard.log import error_log

# A response body known in full and this small is joined with its head and
# sent in one write (with TCP_NODELAY, a second write is a second packet).
JOIN_LIMIT = 65536


class Transport(Protocol):
    """The connection as an exchange sees it; each method raises
    ``ClientDisconnected`` when the client is gone."""

    # Whether send_file works here (not under TLS: the kernel would send the
    # file around the encryption).
    sends_files: bool

    def send(self, data: bytes) -> None:
        """Send all of ``data``."""

    def send_response(self, data: bytes) -> None:
        """Send ``data``, a whole response (head and body); it may be held briefly to go
        out with other connections' responses, and then an error surfaces on the
        connection's next operation instead."""

    def send_file(self, head: bytes, fd: int, offset: int, count: int) -> int:
        """Send ``head``, then ``count`` bytes of file ``fd`` from ``offset``; how many went out."""

    def receive_body(self, exchange: Exchange) -> bytes:
        """The next piece of the request body, ``b""`` at its end, within the body timeouts.

        Raises ``ProtocolError`` for a broken or late body."""


class Outcome(enum.Enum):
    """How an exchange ended, which decides what the connection does next."""

    COMPLETE = "complete"  # a whole response went out (an error page counts)
    ABORTED = "aborted"  # it failed after its head was sent: close at once
    CLIENT_GONE = "client gone"  # the client left; nothing more can be sent


# Module globals for the members used per request (an Enum attribute lookup
# costs ~60 ns).
_COMPLETE, _ABORTED, _CLIENT_GONE = Outcome.COMPLETE, Outcome.ABORTED, Outcome.CLIENT_GONE
_HEAD, _BODY = Phase.HEAD, Phase.BODY
_DONE = State.DONE


class Exchange:
    """A request being answered; afterwards, the record of how it went."""

    __slots__ = (
        "_ctx", "_input", "_proto", "_transport", "body_bytes", "body_since", "duration",
        "environ", "forwarded", "outcome", "request", "start", "started", "writer",
    )

    def __init__(
        self,
        ctx: ServeContext,
        proto: ServerConnection,
        request: Request,
        remote: tuple[str, str],
        forwarded: Forwarded | None,
        transport: Transport,
    ) -> None:
        self._ctx = ctx
        self._proto = proto
        self._transport = transport
        self.request = request
        self.forwarded = forwarded
        self.started = perf_counter()
        self.duration = 0.0
        # Request body received so far, and when the wait for it began: the
        # connection's pacing rule reads them.
        self.body_bytes = 0
        self.body_since: float | None = None
        self.outcome = _COMPLETE
        self.writer = ResponseWriter(proto)
        self.start = ResponseStart(self._write)
        self._input = EMPTY_INPUT if proto.state is _DONE else InputStream(self._pull_body)
        self.environ = make_environ(request, ctx.base_environ, self._input, remote)

    @property
    def status(self) -> str | None:
        """The status sent (``"200 OK"``), or None if no response went out."""
        return self.writer.status

    @property
    def sent(self) -> int:
        """Response body bytes the application produced (what gunicorn's ``%(b)s`` logs)."""
        return self.writer.sent

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """The response's fields as sent (the application's, plus any Content-Length added)."""
        return self.writer.headers

    def run(self) -> None:
        """Answer the request; ``outcome`` then says how it ended."""
        result = None
        try:
            try:
                for starting in self._ctx.starting:
                    starting(self)
                if self.forwarded is not None:
                    self.forwarded.apply(self.environ, self.request.headers)
                result = self._ctx.app(self.environ, self.start)
                self._send_result(result)
            except ProtocolError as exc:
                self._refuse(exc)  # the client broke its body while the application read it
            except ClientDisconnected:
                raise
            except Exception:
                request = self.request
                error_log.exception("Error handling request %s %s", request.method, request.target)
                self._fail(500)
        except ClientDisconnected:
            self.outcome = _CLIENT_GONE
        finally:
            if hasattr(result, "close"):
                try:
                    result.close()
                except Exception:
                    error_log.exception("Error closing the response of %s", self.request.target)
            self.duration = perf_counter() - self.started
            # start_response's write() and wsgi.input hold bound methods of this
            # exchange, which holds them. Cut, the exchange is freed as soon as
            # the connection drops it; left, every request made a cycle for the
            # cyclic collector (a collection every ~50 requests, ~6% of a shard).
            self.start.write = None
            if self._input is not EMPTY_INPUT:
                self._input.end()

    # --- the request body -----------------------------------------------

    def _pull_body(self) -> bytes:
        """``wsgi.input``'s source. A broken or late body ends the connection even if
        the application catches the error (Flask turns it into its own 500): past a
        framing error, the bytes that follow are not requests."""
        try:
            return self._transport.receive_body(self)
        except ProtocolError:
            self._proto.abandon()
            raise

    # --- the response ---------------------------------------------------

    def _send_result(self, result: Iterable[bytes]) -> None:
        start = self.start
        if start.status is not None and type(result) in (list, tuple):
            self._send_whole(result)  # type: ignore[arg-type]
        elif not (start.status is not None and type(result) is FileWrapper
                  and self._transport.sends_files and self._send_file(result)):
            for data in result:
                if data:
                    self._write(data)
                elif start.status is None:
                    raise AssertionError("application yielded before start_response")
        if start.status is None:
            raise AssertionError("application returned without calling start_response")
        writer = self.writer
        if writer.phase is _HEAD:  # no body: the head is the whole response
            self._transport.send_response(self._head(body_length=0) + writer.end())
            return
        tail = writer.end()
        if tail:
            self._transport.send(tail)

    def _send_whole(self, parts: list[bytes] | tuple[bytes, ...]) -> None:
        """A body known in full: its length in the head, and one write when it is small."""
        total = 0
        for part in parts:
            if type(part) is not bytes:
                raise TypeError(f"response body items must be bytes, not {type(part).__name__}")
            total += len(part)
        writer = self.writer
        if writer.phase is _HEAD:
            head = self._head(body_length=total)
            if total <= JOIN_LIMIT:
                body = parts[0] if len(parts) == 1 else b"".join(parts)
                self._transport.send_response(head + writer.data(body))
                return
            self._transport.send(head)
        for part in parts:
            framed = writer.data(part)
            if framed:
                self._transport.send(framed)

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """A regular file through sendfile; False to iterate it instead."""
        try:
            fd = wrapper.filelike.fileno()
            info = os.fstat(fd)
            offset = os.lseek(fd, 0, os.SEEK_CUR)
        except (AttributeError, OSError, ValueError):
            return False
        if not stat.S_ISREG(info.st_mode):
            return False
        size = max(info.st_size - offset, 0)
        head = self._head(body_length=size)
        writer = self.writer
        writer.file_sent(self._transport.send_file(head, fd, offset, writer.file_bytes(size)))
        return True

    def _write(self, data: bytes) -> None:
        """PEP 3333's ``write`` callable, also used for each item of the body."""
        if self.start.status is None:
            raise AssertionError("write() called before start_response")
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise TypeError(f"response body must be bytes, not {type(data).__name__}")
            data = bytes(data)
        writer = self.writer
        if writer.phase is _BODY:
            framed = writer.data(data)
            if framed:
                self._transport.send(framed)
            return
        # The head first: it decides how the body is framed.
        framed = self._head() + writer.data(data)
        if writer.complete():
            # The first piece is all the body its Content-Length allows (a framework's
            # one-item iterable): a whole response.
            self._transport.send_response(framed)
        else:
            self._transport.send(framed)

    def _head(self, body_length: int | None = None) -> bytes:
        start = self.start
        start.headers_sent = True
        ctx = self._ctx
        return self.writer.head(
            start.status,  # type: ignore[arg-type]
            start.headers,
            start.content_length,
            # --keep-alive 0 means no persistent connections, as in gunicorn.
            start.close or ctx.lifecycle.draining or not ctx.keepalive,
            not start.has_date,
            not start.has_server,
            body_length,
        )

    # --- failures -------------------------------------------------------

    def _refuse(self, exc: ProtocolError) -> None:
        request = self.request
        error_log.info("Bad request from %s: %s (%s %s)", self.environ["REMOTE_ADDR"], exc,
                       request.method, request.target)
        self._fail(exc.status)

    def _fail(self, code: int | None) -> None:
        """Answer with ``code`` in place of the response, or abort it if it began."""
        self._proto.abandon()
        if self.writer.phase is not _HEAD:
            self.outcome = _ABORTED
        elif code is None:
            self.outcome = _CLIENT_GONE  # nobody is left to answer
        else:
            self._transport.send(self.writer.refusal(code))
