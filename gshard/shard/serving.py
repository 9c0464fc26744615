"""A shard's serving loop: StreamServers on its listeners until told to leave.

The manager imports this module once before forking (``boot.preload``),
unpatched and without creating an event loop; a shard runs it only after
gevent has monkey-patched the process. Leaving comes in three kinds, each
keeping every request it accepted:

* drain (SIGTERM): stop accepting at once (the listener and its queue stay
  open in the manager for the next shard of the slot), finish in-flight
  requests with ``Connection: close``, give idle keep-alive connections a
  moment to send their next request (answered with ``Connection: close``)
  instead of closing them under a client that is sending, then exit;
* retire (SIGUSR2): the manager has steered new connections away from this
  listener, which will close; keep accepting what is still queued for a
  moment, then drain;
* quit (SIGQUIT, SIGINT): exit now.

Before a drain may come a lame duck (``ipc.LAME_DUCK_SIGNAL``, a stop with
``--shutdown-delay``): the shard keeps accepting and serving, but every
response carries ``Connection: close``, so keep-alive clients reconnect, by
then to servers their load balancer still routes to; the drain that follows
finds few connections left.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import resource
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import gevent
from gevent import monkey
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import StreamServer

from gshard import ipc, log, snapshot
from gshard.errors import EXIT_OK
from gshard.http.access_log import AccessLogger
from gshard.http.connection import Connection, Outbox
from gshard.http.context import Lifecycle, ServeContext
from gshard.http.protocol import Limits
from gshard.http.proxy import AllowList, Forwarded, ProxyProtocol
from gshard.http.wsgi import base_environ
from gshard.ipc import ShardSpec, send
from gshard.shard import metrics, request_hooks

# How often a shard tells the manager its event loop is alive.
BEAT_INTERVAL = 1.0
# Draining: how long an idle keep-alive connection may still send one more
# request (capped by --keep-alive) before it is closed.
DRAIN_IDLE_GRACE = 1.0
# Past --max-requests a shard asks for a successor; the manager ignores the
# request while it cannot act on it (a reload is booting) and a successor may
# fail to boot, so a shard still serving asks again after this long, doubling.
RECYCLE_RETRY_FIRST = 5.0
RECYCLE_RETRY_CAP = 60.0
# Out of descriptors or kernel memory: try accepting again this often, and
# say so in the log at most this often.
ACCEPT_RETRY = 0.1
ACCEPT_WARN_EVERY = 10.0
_real_poll = monkey.get_original("select", "poll")
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _Acceptor(StreamServer):
    """A StreamServer that meets descriptor exhaustion with a pause and one log line.

    gevent prints a traceback for every failed accept. Running out of
    descriptors is an operating condition, not a bug: the connection stays in
    the kernel's queue, accepting resumes once a connection closes, and the
    log says what ran out instead of repeating a traceback.
    """

    def __init__(self, slot: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slot = slot
        self.warned_at = -ACCEPT_WARN_EVERY

    def do_read(self) -> Any:
        try:
            return super().do_read()
        except OSError as exc:
            if exc.errno not in _OUT_OF_RESOURCES:
                raise
            now = time.monotonic()
            if now - self.warned_at >= ACCEPT_WARN_EVERY:
                self.warned_at = now
                log.error_log.warning(
                    "Shard %d: cannot accept connections (%s; open files limit %d); "
                    "they wait in the listen queue", self.slot, exc.strerror,
                    resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                )
            self.stop_accepting()
            gevent.spawn_later(ACCEPT_RETRY, self._resume)
            return None

    def _resume(self) -> None:
        if self.started:  # not closed by a drain meanwhile
            self.start_accepting()


class ShardServer:
    """Everything one shard serves, and how it stops."""

    def __init__(self, spec: ShardSpec, app: Callable, tls_context: Any = None) -> None:
        self.spec = spec
        config = spec.config
        self.config = config
        self.lifecycle = Lifecycle()
        self.leaving = False  # a drain or retire has begun
        self.pool = Pool(config.worker_connections)
        self.stopped = Event()
        self.last_tick = time.monotonic()
        # A hook set worker.alive = False: ask for a successor, as --max-requests does.
        self.retiring = False
        spec.worker.retire = self._retire
        # Counted here, reported with each heartbeat (gshard status, /metrics, statsd).
        self.metrics = metrics.ShardMetrics()
        # Small responses of the connections ready in one loop pass go out together.
        self.outbox = Outbox(gevent.get_hub().loop)
        log.error_log.addHandler(snapshot.LogCounter(self.metrics.logs))
        limits = Limits(**config.limits_kwargs())
        access = AccessLogger(config.access_log_format)
        starting, post_request = request_hooks.request_hooks(config, spec.worker)
        finished = (self.metrics.exchange_done, *((access.log,) if access.enabled else ()),
                    *post_request)
        scheme = "https" if tls_context is not None else "http"
        proxy = (ProxyProtocol(config.proxy_protocol, AllowList(config.proxy_allow_ips))
                 if config.proxy_protocol != "off" else None)
        forwarded = (Forwarded(AllowList(config.forwarded_allow_ips),
                               config.secure_scheme_headers)
                     if config.forwarded_allow_ips else None)
        self.servers = []
        for sock, address, port in spec.listeners:
            ctx = ServeContext(
                app=app,
                base_environ=base_environ(
                    address.unix_path or address.host, str(port), scheme, config.shards > 1,
                    config.script_name,
                ),
                limits=limits,
                keepalive=config.keepalive,
                header_timeout=config.header_timeout,
                body_timeout=config.body_timeout,
                lifecycle=self.lifecycle,
                tls=tls_context,
                proxy=proxy,
                forwarded=forwarded,
                finished=finished,
                sendfile=config.sendfile,
                starting=starting,
                outbox=self.outbox,
            )
            # A gevent socket on the inherited descriptor; the manager keeps its own.
            listener = socket.socket(fileno=sock.detach())
            self.servers.append(
                _Acceptor(spec.slot, listener, handle=_handler(ctx), spawn=self.pool)
            )

    def serve(self) -> int:
        """Serve until told to leave; the exit status."""
        for server in self.servers:
            server.start()
        gevent.signal_handler(signal.SIGTERM, self._leave, 0.0)
        gevent.signal_handler(signal.SIGUSR2, self._leave, self.spec.retire_settle)
        gevent.signal_handler(ipc.LAME_DUCK_SIGNAL, self._lame_duck)
        gevent.signal_handler(signal.SIGQUIT, self._quit)
        gevent.signal_handler(signal.SIGINT, self._quit)
        gevent.signal_handler(signal.SIGUSR1, log.reopen_files)
        if self.config.timeout:
            _watch_event_loop(self, max(self.config.timeout / 2, BEAT_INTERVAL * 2))
        send(self.spec.channel, ipc.Kind.READY)
        gevent.spawn(self._heartbeat)
        if self.config.keepalive:
            gevent.spawn(self._reap_idle)
        self.stopped.wait()
        # A quit does not wait for connections: what they hold still goes out.
        self.outbox.flush()
        send(self.spec.channel, ipc.Kind.BEAT, self._counters())  # the last counts too
        return EXIT_OK

    def _retire(self) -> None:
        self.retiring = True

    def _quit(self) -> None:
        """Exit now (SIGQUIT, SIGINT), after gunicorn's worker_int hook."""
        self.spec.worker.call("worker_int")
        self.stopped.set()

    def _counters(self) -> str:
        """This shard's counters and gauges, encoded for a heartbeat."""
        counters = self.metrics.snapshot(len(self.pool), len(self.lifecycle.idle),
                                         metrics.read_rss())
        return snapshot.encode(counters)

    def _lame_duck(self) -> None:
        """Serve on, accepting as before, but close each connection after its response.

        The connections' ``draining`` flag is what adds ``Connection: close``;
        the listeners stay open until the drain the manager sends later.
        """
        self.lifecycle.draining = True

    def _leave(self, keep_accepting: float) -> None:
        if not self.leaving:
            self.leaving = self.lifecycle.draining = True
            gevent.spawn(self._drain, keep_accepting)

    def _drain(self, keep_accepting: float) -> None:
        if keep_accepting:
            gevent.sleep(keep_accepting)
        for server in self.servers:
            server.close()
        if self.lifecycle.idle:
            gevent.sleep(min(self.config.keepalive, DRAIN_IDLE_GRACE))
        for idle in list(self.lifecycle.idle):
            _close_idle(idle, self.lifecycle.idle)
        if not self.pool.join(timeout=self.config.graceful_timeout):
            log.error_log.warning("Shard %d: %d connections still open after %gs",
                                  self.spec.slot, len(self.pool), self.config.graceful_timeout)
        self.stopped.set()

    def _heartbeat(self) -> None:
        spec = self.spec
        limit = _request_limit(self.config)
        ask_at, retry = 0.0, RECYCLE_RETRY_FIRST
        while not self.stopped.is_set():
            now = self.last_tick = time.monotonic()
            send(spec.channel, ipc.Kind.BEAT, self._counters())
            if os.getppid() != spec.manager_pid:
                log.error_log.warning("Shard %d: the manager is gone; draining", spec.slot)
                self._leave(0.0)
            if ((self.retiring or (limit and self.lifecycle.handled >= limit))
                    and not self.lifecycle.draining
                    and now >= ask_at and send(spec.channel, ipc.Kind.RECYCLE)):
                # The manager starts a successor; this shard drains once it serves.
                ask_at, retry = now + retry, min(retry * 2, RECYCLE_RETRY_CAP)
            self.stopped.wait(BEAT_INTERVAL)

    def _reap_idle(self) -> None:
        """Close keep-alive connections idle longer than ``--keep-alive``.

        One sweep every quarter of the keep-alive (at most every 0.5 s) serves
        every idle connection of the shard, so a connection closes within
        ``--keep-alive`` plus that interval.
        """
        keepalive = self.config.keepalive
        interval = min(max(keepalive / 4, 0.05), 0.5)
        idle = self.lifecycle.idle
        while not self.stopped.wait(interval):
            expired = time.monotonic() - keepalive
            for sock, since in list(idle.items()):
                if since <= expired:
                    _close_idle(sock, idle)


def _close_idle(sock: socket.socket, idle: dict) -> None:
    """End an idle keep-alive connection, unless a request is arriving on it.

    The socket leaves the idle map, which tells its connection that the wait
    is over, and its reading side is shut down, which wakes that wait. The
    connection's greenlet then closes it the way every connection closes
    (``http.linger``): over TLS, with the closure alert first, a write this
    shutdown leaves possible.
    """
    # The real poll: gevent's select() calls select(2), which refuses
    # descriptors past 1023, and a busy shard has many.
    poller = _real_poll()
    poller.register(sock, select.POLLIN)
    if poller.poll(0):
        return  # it is served (with Connection: close while draining)
    idle.pop(sock, None)
    with contextlib.suppress(OSError):
        # The socket under gevent's wrapper: a TLS socket's own shutdown()
        # would throw its TLS state away, and the closure alert with it.
        sock._sock.shutdown(socket.SHUT_RD)


def _handler(ctx: ServeContext) -> Callable:
    def handle(sock: socket.socket, address: object) -> None:
        # Unix socket peers have no address.
        remote = (str(address[0]), str(address[1])) if isinstance(address, tuple) else ("", "")
        Connection(sock, remote, ctx).serve()

    return handle


def _request_limit(config) -> int:
    """--max-requests plus this shard's share of jitter; 0 when recycling is off."""
    if not config.max_requests:
        return 0
    return config.max_requests + random.randint(0, config.max_requests_jitter)


def _watch_event_loop(shard: ShardServer, threshold: float) -> None:
    """Log the stack of whatever blocks the event loop longer than ``threshold``.

    A blocked loop cannot report on itself, so a real OS thread watches the
    heartbeat greenlet's tick. The manager kills the shard at --timeout; this
    report (at half of it) says which code was to blame.
    """
    start_thread = monkey.get_original("_thread", "start_new_thread")
    sleep = monkey.get_original("time", "sleep")
    # sys._current_frames() is keyed by OS thread ids. Once patched, a thread's
    # ``ident`` (main_thread().ident included) is gevent's id of a greenlet, which
    # matches no key; the original get_ident, called here in the main thread, does.
    main_thread = monkey.get_original("_thread", "get_ident")()

    def watch() -> None:
        reported_tick = None
        while True:
            sleep(BEAT_INTERVAL)
            tick = shard.last_tick
            blocked = time.monotonic() - tick
            if blocked < threshold or tick == reported_tick:
                continue
            reported_tick = tick
            frame = sys._current_frames().get(main_thread)
            stack = "".join(traceback.format_stack(frame)) if frame else "(no stack)\n"
            _write_error(f"Shard {shard.spec.slot}: event loop blocked for {blocked:.0f}s "
                         f"(limit --timeout {shard.config.timeout:g}s); it is running:\n{stack}")
            if frame is not None:  # for the manager's restart history
                where = f"{frame.f_code.co_filename}:{frame.f_lineno} ({frame.f_code.co_name})"
                send(shard.spec.channel, ipc.Kind.BLOCKED, where)

    start_thread(watch, ())


def _write_error(message: str) -> None:
    """Write to the error log from a thread that must not take gevent's locks."""
    stamp = time.strftime(log.DATE_FORMAT)
    line = f"[{stamp}] [{os.getpid()}] [ERROR] {message}"
    for handler in log.error_log.handlers:
        stream = getattr(handler, "stream", None)
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                os.write(stream.fileno(), line.encode("utf-8", "replace"))
