"""One client socket served to the end: the only place that calls recv and send.

``Connection`` is the I/O adapter between a gevent socket and the sans-IO
layers: ``protocol`` parses requests, each ``exchange.Exchange`` runs the
application and frames its response through ``response.ResponseWriter``. What
stays here needs a socket or a clock: the preamble (PROXY header, TLS
handshake), waiting for requests and bodies within their timeouts, sending
and sendfile, the lingering close, and the shard's ``Outbox``.

The outbox batches small responses. Sent the moment its application returns,
each response wakes a client that is asleep waiting for it: in the kernel
that wake-up costs the sender more than the send itself, and the next
request's code then runs on a core the wake-up left cold. When the loop has
other connections ready in the same pass, a small whole response is held in
the outbox instead, and one loop callback sends every held response after
the last ready connection has run its application: one wake-up of a client
(or a proxy) then covers many responses. When nothing else is ready, a
response goes out at once, as before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from time import monotonic
from typing import Any

from gevent import get_hub
from gevent.socket import wait_write
from greenlet import getcurrent

from gshard.errors import ClientDisconnected, ProtocolError
from gshard.http import linger
from gshard.http.context import ServeContext
from gshard.http.exchange import Exchange, Outcome
from gshard.http.preamble import read_proxy_header, tls_handshake
from gshard.http.protocol import CONNECTION_CLOSED, Data, Need, Request, ServerConnection, State
from gshard.http.proxy import Forwarded
from gshard.http.response import error_response
from gshard.log import error_log

RECV_SIZE = 65536
# Unread request body we read and discard to keep a connection; past it, close.
DISCARD_LIMIT = 256 * 1024
# Past the first --body-timeout seconds, a request body must average at least
# this many bytes a second (Apache's RequestReadTimeout uses 500).
MIN_BODY_RATE = 512

# The largest whole response (head and body) the outbox holds, and the most it
# holds for one connection (pipelined responses append). Past it a response is
# sent at once: the wake-up a batch saves is a fixed cost per response, worth
# less next to copying a larger body, and a held response must almost always
# fit the socket's send buffer in the flush's one non-blocking send (16 KiB is
# Linux's initial TCP send buffer, tcp_wmem), or its connection has to finish
# it. A shard holds at most this much per connection ready in one loop pass.
BATCH_LIMIT = 16384

# The longest a response is held while the applications of its pass run: a pass
# of slow applications (or of many) still sends every millisecond, so holding
# adds at most this much latency, plus the application running when it passes.
# At ~70 us a Flask request, a batch still covers a dozen responses.
HOLD_TIME = 0.001

# Module globals for members tested per request (an Enum attribute lookup costs ~60 ns).
_COMPLETE, _NEED_DATA, _BODY = Outcome.COMPLETE, Need.DATA, State.BODY
_CLIENT_GONE = (ClientDisconnected, BrokenPipeError, ConnectionResetError,
                ConnectionAbortedError, TimeoutError)


class Outbox:
    """A shard's held responses, sent by one loop callback after the pass that made them.

    The loop runs ``flush`` (``loop.run_callback``): gevent runs callbacks
    before it polls again, that is after every watcher that was ready in this
    pass, so each connection woken in the pass has run its application by
    then. A pass of slow applications does not hold responses for long: a
    connection about to run an application flushes first what has been held
    HOLD_TIME already. ``flush`` never waits: a connection whose response does
    not go out whole (or fails) finishes (or reports) it itself.
    """

    __slots__ = ("loop", "since", "waiting")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        # Connections holding a response, in the order they first held one, and
        # when the first of them did.
        self.waiting: list[Connection] = []
        self.since = 0.0

    def busy(self) -> bool:
        """Whether to hold a response now: responses are held already, or other
        watchers of this pass are still to run (libev's pending count)."""
        return bool(self.waiting) or self.loop.pendingcnt > 0

    def hold(self, conn: Connection) -> None:
        if not self.waiting:
            self.since = monotonic()
            self.loop.run_callback(self.flush)
        self.waiting.append(conn)

    def overdue(self) -> None:
        """Send what is held if it has waited HOLD_TIME already (before an application
        runs: it may run long). One clock read per request, and only while
        responses are held."""
        if self.waiting and monotonic() - self.since >= HOLD_TIME:
            self.flush()

    def flush(self) -> None:
        """Send every held response (the loop callback; a connection past HOLD_TIME;
        a shard's exit)."""
        waiting = self.waiting
        self.waiting = []
        for conn in waiting:
            conn.send_held()


class Connection:
    """Serves requests on one socket until either side ends it; the ``Transport``
    of its exchanges."""

    __slots__ = ("ctx", "failure", "forwarded", "held", "outbox", "parked", "proto", "queued",
                 "raw", "readable", "remote", "resume", "sock", "to_loop")

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
        # The loop's read watcher on the raw socket, made at the first keep-alive wait,
        # with what resumes this connection's greenlet and what switches to the loop.
        self.readable = None
        self.resume = self.to_loop = None
        # The shard's outbox (None: every response goes out at once), the bytes held
        # for it (in order, never past BATCH_LIMIT), whether this connection is in
        # its list, and the error its flush met (raised by the next operation).
        self.outbox: Outbox | None = ctx.outbox
        self.held: bytes | None = None
        self.queued = False
        self.failure: OSError | None = None
        # Waiting in _recv_when_readable, where the outbox wakes it when a held
        # response could not go out whole.
        self.parked = False

    def serve(self) -> None:
        unread = False
        try:
            unread = self._start()
        except _CLIENT_GONE:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EBADF, errno.ENOTCONN, errno.EPIPE):
                error_log.debug("connection from %s ended: %s", self.remote[0], exc)
        finally:
            if self.held is not None:
                with contextlib.suppress(OSError):  # a close sends what is held first
                    self._send_held()
            if self.readable is not None:
                self.readable.close()
            linger.close(self.sock, unread)

    def _start(self) -> bool:
        """The preamble the listener asks for, then requests; True if input was left unread."""
        ctx = self.ctx
        deadline = monotonic() + ctx.header_timeout
        if ctx.proxy is not None:
            try:
                remote = read_proxy_header(self.sock, ctx.proxy, self.remote, deadline)
            except ProtocolError as exc:
                if ctx.tls is not None:
                    exc.status = None  # a plain-text 400 means nothing to a TLS client
                self._refuse(exc)
                return exc.status is not None
            if remote is None:
                return False
            self.remote = remote
        if ctx.tls is not None:
            self.raw = None
            self.outbox = None  # TLS keeps its own path: its sends go through the TLS layer
            tls = tls_handshake(self.sock, ctx.tls, self.remote[0], deadline)
            if tls is None:
                return False
            self.sock = tls
        forwarded = ctx.forwarded
        if forwarded is not None and forwarded.trusted.allows(self.remote[0]):
            self.forwarded = forwarded
        return self._serve(deadline)

    def _serve(self, deadline: float | None) -> bool:
        """Serve requests in order; True if input may be left unread at the end."""
        ctx = self.ctx
        proto = self.proto
        lifecycle = ctx.lifecycle
        outbox = self.outbox
        while True:
            try:
                request = self._read_request(deadline)
            except ProtocolError as exc:
                self._refuse(exc)
                return True
            if request is None:
                return False
            exchange = Exchange(ctx, proto, request, self.remote, self.forwarded, self)
            if outbox is not None:
                outbox.overdue()
            exchange.run()
            lifecycle.handled += 1
            for finished in ctx.finished:
                finished(exchange)
            if exchange.outcome is not _COMPLETE:
                return False
            if lifecycle.draining:
                proto.abandon()
            if proto.keep_alive and proto.state is _BODY:
                self._discard_body(exchange)
            unread = proto.state is _BODY or proto.buffered > 0
            if not proto.start_next_cycle():
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
            if event is not _NEED_DATA:
                return None if event is CONNECTION_CLOSED else event  # type: ignore[return-value]
            if deadline is None and proto.buffered == 0:
                if not self._wait_idle():
                    return None
                deadline = monotonic() + self.ctx.header_timeout
                continue
            if deadline is None:
                deadline = monotonic() + self.ctx.header_timeout
            remaining = deadline - monotonic()
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
        sock = self.sock
        lifecycle.idle[sock] = monotonic()
        try:
            data = self._recv_when_readable() if self.raw is not None else self._recv_tls()
        except OSError:
            return False
        finally:
            lifecycle.idle.pop(sock, None)
        self.proto.receive_data(data)
        return bool(data)

    def _recv_when_readable(self) -> bytes:
        """Wait for the loop to report the socket readable, then read.

        Waiting first, before any recv, is what keeps a shard fair: a client
        whose next request is already here queues behind the others for one
        poll, instead of being served again at once while they wait. It is
        also cheaper than trying first: the try fails most of the time (the
        client is still reading our response), and each failure is a system
        call and an exception.
        """
        raw = self.raw
        readable = self.readable
        if readable is None:
            hub = get_hub()
            readable = self.readable = hub.loop.io(raw.fileno(), 1)  # 1: readable
            # The watcher switches straight back to this greenlet (hub.wait would
            # make a Waiter and bind its switch for every request).
            self.resume = getcurrent().switch
            self.to_loop = hub.switch
        while True:
            readable.start(self.resume)
            self.parked = True
            try:
                self.to_loop()
            finally:
                self.parked = False
                readable.stop()
            if self.held is not None or self.failure is not None:
                self._send_held()  # woken by the outbox: finish (or report) a held response
                continue
            try:
                return raw.recv(RECV_SIZE)
            except BlockingIOError:
                continue

    def _recv_tls(self) -> bytes:
        """The next request's first bytes through TLS, once there are any.

        A request may be decrypted already (``pending``): read it at once.
        Otherwise wait for the socket as the plain path does, so that the
        shard's reaper can end the wait without a read: a read that met the
        shut-down socket would leave the TLS layer broken, unable to send the
        closure alert the close owes the client (RFC 9112 9.8).
        """
        sock = self.sock
        if not sock.pending():
            readable = self.readable
            if readable is None:
                readable = self.readable = get_hub().loop.io(sock.fileno(), 1)  # 1: readable
            get_hub().wait(readable)
            if sock not in self.ctx.lifecycle.idle:
                return b""  # the reaper ended the wait
        if sock.timeout is not None:
            sock.settimeout(None)  # the wait had no timer; neither has the read
        return sock.recv(RECV_SIZE)

    def receive_body(self, exchange: Exchange) -> bytes:
        """The next piece of the request body; ``b""`` at its end (the Transport's)."""
        proto = self.proto
        interim = proto.continue_bytes()
        if interim:
            self.send(interim)
        while True:
            event = proto.next_event()
            if type(event) is Data:
                exchange.body_bytes += len(event.data)
                return event.data
            if event is not _NEED_DATA:
                return b""
            self.sock.settimeout(self._body_wait(exchange))
            try:
                proto.receive_data(self.sock.recv(RECV_SIZE))
            except TimeoutError:
                raise ProtocolError("request body not received in time", 408) from None
            except OSError as exc:
                raise ClientDisconnected(*exc.args) from exc

    def _body_wait(self, exchange: Exchange) -> float:
        """How long the next body read may wait.

        Each wait is bounded by ``--body-timeout``, and so is the whole body
        beyond what MIN_BODY_RATE allows for the bytes already received: a
        client trickling a byte now and then cannot hold the connection forever.
        """
        now = monotonic()
        if exchange.body_since is None:
            exchange.body_since = now
        allowed = self.ctx.body_timeout + exchange.body_bytes / MIN_BODY_RATE
        remaining = exchange.body_since + allowed - now
        if remaining <= 0:
            raise ProtocolError("request body arriving too slowly", 408)
        return min(self.ctx.body_timeout, remaining)

    def _discard_body(self, exchange: Exchange) -> None:
        """Read what the application left of the body, so the connection stays usable."""
        budget = DISCARD_LIMIT
        try:
            while budget > 0:
                piece = self.receive_body(exchange)
                if not piece:
                    return
                budget -= len(piece)
        except ProtocolError as exc:
            # Answered already, so nothing to send; but a malformed body is a bad
            # request all the same, and logged as the others are.
            error_log.info("Bad request from %s: %s (in a body the application left "
                           "unread; the connection closes)", self.remote[0], exc)
        except OSError:
            pass
        self.proto.abandon()

    # --- sending (the Transport's) ---------------------------------------

    @property
    def sends_files(self) -> bool:
        return self.raw is not None and self.ctx.sendfile

    def send_response(self, data: bytes) -> None:
        """Send a whole response, head and body; the outbox may hold it for this pass.

        It is held when it is small, the connection stays open after it, and
        the loop has other work ready in this pass (or holds responses
        already); otherwise, and always under TLS, it goes out at once (before
        a close, holding would save nothing). Held bytes of one connection stay
        in order: a later response appends to them, and any other send sends
        them first.
        """
        outbox = self.outbox
        if outbox is not None and len(data) <= BATCH_LIMIT and self.proto.keep_alive:
            held = self.held
            if held is None:
                if self.failure is None and outbox.busy():
                    self.held = data
                    if not self.queued:
                        self.queued = True
                        outbox.hold(self)
                    return
            elif self.queued and len(held) + len(data) <= BATCH_LIMIT:
                self.held = held + data
                return
        self.send(data)

    def send_held(self) -> None:
        """Send what this connection holds, without waiting (the outbox's flush).

        What does not go out whole stays held, and an error is kept for the
        connection's next operation; either way a connection parked for its
        next request is woken to deal with it.
        """
        self.queued = False
        data = self.held
        if data is None:
            return  # the connection sent it itself meanwhile
        try:
            sent = self.raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.held = None
            self.failure = exc
            sent = -1
        if sent == len(data):
            self.held = None
            return
        if sent > 0:
            self.held = data[sent:]
        if self.parked:
            # Through the loop: this may run in another connection's greenlet.
            self.outbox.loop.run_callback(self._wake)

    def _wake(self) -> None:
        """Resume the connection parked for its next request, as the loop would if its
        socket became readable (it checks what it holds before reading)."""
        if self.parked:
            self.resume()

    def _send_held(self) -> None:
        """Send what is held from the connection's own greenlet (it may wait), or raise
        the error a flush met."""
        failure = self.failure
        if failure is not None:
            raise ClientDisconnected(*failure.args) from failure
        data = self.held
        self.held = None
        self._send(data)

    def send(self, data: bytes) -> None:
        """Send to the client; a failure is the client's, never the application's.

        Anything held for this connection goes out first, and an error a held
        response met is raised here.
        """
        if self.held is not None or self.failure is not None:
            self._send_held()
        self._send(data)

    def _send(self, data: bytes) -> None:
        """Send now, in this greenlet.

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
        except OSError as exc:
            raise ClientDisconnected(*exc.args) from exc

    def send_file(self, head: bytes, fd: int, offset: int, count: int) -> int:
        """Send ``head``, then ``count`` bytes of ``fd`` from ``offset`` with os.sendfile."""
        timeout = self.ctx.body_timeout
        self.sock.settimeout(timeout)
        self.send(head)
        sock_fd = self.sock.fileno()
        sent = 0
        try:
            while sent < count:
                try:
                    n = os.sendfile(sock_fd, fd, offset + sent, count - sent)
                except BlockingIOError:
                    wait_write(sock_fd, timeout=timeout)
                    continue
                if n == 0:
                    break  # the file shrank; the writer closes the connection after
                sent += n
        except OSError as exc:
            raise ClientDisconnected(*exc.args) from exc
        return sent

    # --- refusing --------------------------------------------------------

    def _refuse(self, exc: ProtocolError) -> None:
        """Answer what is not a request we can serve with its 4xx/5xx; the caller closes."""
        error_log.info("Bad request from %s: %s", self.remote[0], exc)
        if exc.status is not None:
            self.send(error_response(exc.status))
