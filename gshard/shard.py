"""A shard: one forked process serving its slot's listeners on a gevent loop.

The manager imports this module (to call ``run`` in the child it forks) and
must stay unpatched, so gevent and everything that uses it is imported only
inside ``run``, after ``monkey.patch_all()`` and before the application.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sys
import traceback
from dataclasses import dataclass
from typing import NoReturn

from gshard import ipc, log
from gshard.config import BindAddress, Config
from gshard.errors import EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR, EXIT_OK, AppLoadError

# How often a shard tells the manager its event loop is alive.
BEAT_INTERVAL = 1.0


@dataclass
class ShardSpec:
    """What the manager hands a shard when it forks it."""

    config: Config
    slot: int
    generation: int
    listeners: list[tuple[socket.socket, BindAddress, int]]  # socket, address, bound port
    channel: socket.socket
    manager_pid: int


def _exit_now(signum: int, frame: object) -> None:
    os._exit(EXIT_OK)


def run(spec: ShardSpec) -> NoReturn:
    """Become a shard; never returns, so the manager's stack is never unwound here."""
    # Until the loop installs its handlers, being told to stop means exiting.
    for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(signum, _exit_now)
    for signum in (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU,
                   signal.SIGWINCH):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    status = EXIT_BOOT_ERROR
    try:
        status = _run(spec)
    except BaseException:
        traceback.print_exc()
    finally:
        for handler in (*log.error_log.handlers, *log.access_log.handlers):
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _send(channel: socket.socket, kind: ipc.Kind, detail: str = "") -> bool:
    try:
        channel.send(ipc.encode(ipc.Message(kind, os.getpid(), detail)))
    except OSError:
        return False
    return True


def _run(spec: ShardSpec) -> int:
    from gevent import monkey

    monkey.patch_all()

    import gevent
    from gevent.event import Event
    from gevent.pool import Pool
    from gevent.server import StreamServer

    from gshard.connection import Connection, Lifecycle, ServeContext
    from gshard.loader import load_app
    from gshard.log import AccessLogger
    from gshard.protocol import Limits
    from gshard.wsgi import base_environ

    config = spec.config
    set_process_title(f"shard {spec.slot} gen {spec.generation}", config)
    log.configure(config.loglevel, config.errorlog, config.accesslog)
    spec.channel.setblocking(False)

    try:
        if config.chdir:
            os.chdir(config.chdir)
        app = load_app(config.app, os.getcwd())
    except Exception as exc:
        detail = str(exc) if isinstance(exc, AppLoadError) else traceback.format_exc()
        if not _send(spec.channel, ipc.Kind.BOOT_FAILED, detail):
            log.error_log.error("Failed to load the application:\n%s", detail)
        return EXIT_APP_LOAD_ERROR

    lifecycle = Lifecycle()
    pool = Pool(config.worker_connections)
    limits = Limits(**config.limits_kwargs())
    access = AccessLogger(config.access_log_format)
    servers = []
    for sock, address, port in spec.listeners:
        ctx = ServeContext(
            app=app,
            base_environ=base_environ(
                address.unix_path or address.host, str(port), "http", config.shards > 1
            ),
            limits=limits,
            keepalive=config.keepalive,
            header_timeout=config.header_timeout,
            body_timeout=config.body_timeout,
            access=access,
            lifecycle=lifecycle,
        )
        # A gevent socket on the inherited descriptor: the manager keeps its own.
        listener = socket.socket(fileno=sock.detach())
        servers.append(StreamServer(listener, handle=_connection_handler(Connection, ctx),
                                    spawn=pool))
    for server in servers:
        server.start()

    stopped = Event()

    def drain() -> None:
        lifecycle.draining = True
        for server in servers:
            server.close()
        for idle in list(lifecycle.idle):
            with contextlib.suppress(OSError):
                idle.shutdown(socket.SHUT_RDWR)
        if not pool.join(timeout=config.graceful_timeout):
            log.error_log.warning("Shard %d: %d connections still open after %gs",
                                  spec.slot, len(pool), config.graceful_timeout)
        stopped.set()

    def on_term() -> None:
        if not lifecycle.draining:
            gevent.spawn(drain)

    gevent.signal_handler(signal.SIGTERM, on_term)
    gevent.signal_handler(signal.SIGQUIT, stopped.set)
    gevent.signal_handler(signal.SIGINT, stopped.set)
    gevent.signal_handler(signal.SIGUSR1, log.reopen_files)

    limit = _request_limit(config)
    _send(spec.channel, ipc.Kind.READY)

    def heartbeat() -> None:
        recycle_sent = False
        while not stopped.is_set():
            _send(spec.channel, ipc.Kind.BEAT)
            if os.getppid() != spec.manager_pid:
                log.error_log.warning("Shard %d: the manager is gone; draining", spec.slot)
                on_term()
            if limit and not recycle_sent and lifecycle.handled >= limit:
                recycle_sent = _send(spec.channel, ipc.Kind.RECYCLE)
            stopped.wait(BEAT_INTERVAL)

    gevent.spawn(heartbeat)
    stopped.wait()
    return EXIT_OK


def _connection_handler(connection_class: type, ctx: object):
    """The StreamServer callback; the class is passed in because it is imported late."""

    def handle(sock: socket.socket, address: object) -> None:
        # Unix socket peers have no address.
        remote = (str(address[0]), str(address[1])) if isinstance(address, tuple) else ("", "")
        connection_class(sock, remote, ctx).serve()

    return handle


def _request_limit(config: Config) -> int:
    if not config.max_requests:
        return 0
    return config.max_requests + random.randint(0, config.max_requests_jitter)


def set_process_title(role: str, config: Config) -> None:
    """``gshard: shard 2 gen 3 [myapp:app]``, so ``ps`` tells the story."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(f"gshard: {role} [{config.proc_name or config.app}]")
