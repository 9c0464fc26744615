"""The ``--preload`` template process: load the application once, then fork shards on request.

The manager forks it and runs ``run`` in it (``manager/templates.py`` keeps the
manager's handle and explains the design: the double fork that makes each
shard the manager's child, and what a template that dies costs).
"""

from __future__ import annotations

import os
import signal
import socket
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from gshard import hooks, ipc, log
from gshard.config import Config
from gshard.errors import EXIT_BOOT_ERROR, EXIT_OK
from gshard.shard import boot
from gshard.sockets.listener import ListenerSet

_REQUEST_SIZE = 256
_MAX_LISTENERS = 64
# How many milliseconds a new shard waits at most to become the manager's child.
ADOPTION_POLLS = 5000


def run(config: Config, generation: int, requests: socket.socket, listeners: list[ListenerSet],
        channel: socket.socket, manager_pid: int, server: hooks.Server,
        retire_settle: float) -> NoReturn:
    """Become generation ``generation``'s template: load the app, then fork shards on request
    (``retire_settle``: the manager's, for every shard's ``ShardSpec``)."""
    for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN,
                   signal.SIGTTOU, signal.SIGWINCH, ipc.LAME_DUCK_SIGNAL):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    status = EXIT_BOOT_ERROR
    try:
        log.set_process_title(f"template gen {generation}", config)
        boot.patch_stdlib()
        log.configure_for(config)
        preloaded = boot.load(config)  # which freezes what it loaded (gc.freeze)
        _serve_requests(config, requests, listeners, channel, manager_pid, server,
                        retire_settle, preloaded)
        status = EXIT_OK
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


def _serve_requests(config: Config, requests: socket.socket, listeners: list[ListenerSet],
                    channel: socket.socket, manager_pid: int, server: hooks.Server,
                    retire_settle: float, preloaded: Any) -> None:
    """Fork a shard per request until the manager closes the socket."""
    from gevent import monkey

    # The template blocks in recv and waits for one child at a time: plain
    # calls, not gevent's cooperative ones, since it has nothing else to do.
    fork = monkey.get_original("os", "fork")
    waitpid = monkey.get_original("os", "waitpid")
    requests.setblocking(True)
    while True:
        data, fds, _, _ = socket.recv_fds(requests, _REQUEST_SIZE, _MAX_LISTENERS)
        if not data:
            return
        slot, generation, age = (int(word) for word in data.split())
        sockets = [socket.socket(fileno=fd) for fd in fds]
        worker = hooks.Worker(server, age, slot, generation, config)
        spec = ipc.ShardSpec(
            config=config, slot=slot, generation=generation,
            listeners=[(sock, ls.address, ls.port)
                       for sock, ls in zip(sockets, listeners, strict=True)],
            channel=channel, manager_pid=manager_pid, retire_settle=retire_settle,
            worker=worker,
        )
        middle = fork()
        if middle == 0:
            _fork_shard(fork, requests, spec, preloaded)
        waitpid(middle, 0)
        for sock in sockets:
            sock.close()


def _wait_for_adoption(manager_pid: int) -> None:
    """Wait until the manager is this shard's parent: the intermediate child's
    exit (tearing down a copy of a large template takes a while) reparents it.
    A shard serves only as the manager's child: it takes any other parent as
    the sign that the manager is gone. Bounded, in case it really is."""
    from gevent import monkey

    sleep = monkey.get_original("time", "sleep")
    for _ in range(ADOPTION_POLLS):
        if os.getppid() == manager_pid:
            return
        sleep(0.001)


def _fork_shard(fork: Callable[[], int], requests: socket.socket, spec: ipc.ShardSpec,
                preloaded: Any) -> NoReturn:
    """In the intermediate child: fork the shard and exit, so the manager (the
    subreaper) becomes its parent."""
    try:
        if fork() == 0:
            requests.close()
            # First thing, so the manager knows this shard before any other
            # message from it, and before it can reap it.
            ipc.send(spec.channel, ipc.Kind.SPAWNED,
                     f"{os.getpid()} {spec.generation} {spec.worker.age}")
            _wait_for_adoption(spec.manager_pid)
            boot.run(spec, preloaded)
    finally:
        os._exit(0)
