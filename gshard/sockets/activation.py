"""systemd socket activation: serving on the sockets a ``.socket`` unit passes.

systemd binds the sockets, starts gshard with them open from descriptor 3 on,
and says so in ``LISTEN_PID``, ``LISTEN_FDS`` and ``LISTEN_FDNAMES``. As in
gunicorn, the passed sockets replace ``--bind``. A passed TCP socket with
SO_REUSEPORT (``ReusePort=yes``) gets sibling sockets bound to its address,
so each shard keeps a queue of its own (and steering and scaling work as with
``--bind``); without it, or for a unix socket, the shards share its one
queue. The manager removes the variables from its environment at start, so
neither its shards nor a successor (``SIGUSR2``, which inherits the sockets
as it does any others) takes them for its own.

``take`` reads the protocol without touching a descriptor; ``listeners``
does the I/O.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass

from gshard import log
from gshard.addresses import DEFAULT_PORT, BindAddress
from gshard.sockets.listener import ListenerSet, add_siblings, systemd_listener

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START
ENV_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
UNNAMED = "unknown"  # what systemd's sd_listen_fds_with_names reports for a nameless socket


@dataclass(frozen=True)
class PassedSocket:
    fd: int
    name: str


@dataclass(frozen=True)
class Activation:
    """What the environment passed to this process; ``ignored`` says why nothing, if set."""

    sockets: tuple[PassedSocket, ...] = ()
    ignored: str = ""


def take(environ: MutableMapping[str, str], pid: int) -> Activation:
    """Remove ``LISTEN_*`` from ``environ``; the sockets they pass to process ``pid``.

    As systemd's ``sd_listen_fds``: without ``LISTEN_PID``, or with another
    process's pid (the variables were inherited, not meant for this one),
    nothing is passed. Raises ValueError for variables that cannot be read.
    """
    values = {name: environ.pop(name, None) for name in ENV_VARIABLES}
    listen_pid, listen_fds, names = (values[name] for name in ENV_VARIABLES)
    if listen_fds is None:
        return Activation()
    if listen_pid is None:
        return Activation(ignored="LISTEN_FDS is set without LISTEN_PID")
    if not listen_pid.isdigit() or int(listen_pid) == 0:
        raise ValueError(f"LISTEN_PID={listen_pid!r} is not a process id")
    if not listen_fds.isdigit():
        raise ValueError(f"LISTEN_FDS={listen_fds!r} is not a count of descriptors")
    if int(listen_pid) != pid:
        return Activation(ignored=f"LISTEN_FDS is meant for process {listen_pid}, "
                                  f"not this one ({pid})")
    count = int(listen_fds)
    if names is None:
        fdnames = [UNNAMED] * count
    else:
        fdnames = names.split(":")
        if len(fdnames) != count:
            raise ValueError(f"LISTEN_FDNAMES names {len(fdnames)} sockets, "
                             f"LISTEN_FDS passes {count}")
    return Activation(tuple(PassedSocket(LISTEN_FDS_START + i, name or UNNAMED)
                            for i, name in enumerate(fdnames)))


def listeners(
    activation: Activation, binds: tuple[BindAddress, ...], slots: int, backlog: int
) -> list[ListenerSet]:
    """The passed sockets as listener sets, each with siblings if it has SO_REUSEPORT.

    Logs which sockets each shard accepts on. Raises OSError or ValueError for
    a descriptor that is not a listening stream socket.
    """
    opened: list[ListenerSet] = []
    try:
        for passed in activation.sockets:
            opened.append(_listener(passed, slots, backlog))
    except BaseException:
        for listener_set in opened:
            listener_set.close()
        raise
    if binds != _DEFAULT_BINDS:
        log.error_log.warning("Socket activation: serving on the sockets systemd passed; "
                              "--bind %s is not used", " ".join(b.url() for b in binds))
    return opened


def _listener(passed: PassedSocket, slots: int, backlog: int) -> ListenerSet:
    try:
        sock = socket.socket(fileno=passed.fd)
    except OSError as exc:
        raise OSError(exc.errno, f"descriptor {passed.fd} ({passed.name!r}) passed by "
                      f"systemd is not a socket: {exc.strerror}") from None
    try:
        listener_set = systemd_listener([sock], passed.name)
    except ValueError:
        sock.close()
        raise
    where = f"Socket activation: {passed.name!r} at {listener_set.url}"
    if listener_set.address.is_unix:
        log.error_log.info("%s: the %s share its one accept queue (a unix socket "
                           "has no SO_REUSEPORT group)", where, log.shards(slots))
    elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
        log.error_log.info("%s has no SO_REUSEPORT: the %s share its one accept "
                           "queue, no steering (set ReusePort=yes in the .socket unit for "
                           "one queue per shard)", where, log.shards(slots))
    else:
        try:
            add_siblings(listener_set, slots, backlog)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                reason += " (a SO_REUSEPORT group takes only sockets of the same user)"
            log.error_log.warning("%s has SO_REUSEPORT, but gshard cannot add sockets to "
                                  "its group: %s; the %s share its one accept queue",
                                  where, reason, log.shards(slots))
        else:
            log.error_log.info("%s has SO_REUSEPORT: each of the %s gets its own "
                               "socket in its group (%d added)", where, log.shards(slots),
                               slots - 1)
    return listener_set


_DEFAULT_BINDS = (BindAddress("127.0.0.1", DEFAULT_PORT),)  # --bind not given
