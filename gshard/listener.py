"""The listening sockets: one SO_REUSEPORT socket per shard slot and address.

The manager opens them once and holds them for its whole life. A shard only
borrows its slot's socket: when a shard exits (drained, crashed or killed),
the manager's reference keeps the socket and its accept queue alive, so the
connections waiting in it are served by the next shard of that slot instead
of being reset by the kernel.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass, field

from gshard.config import BindAddress


@dataclass
class ListenerSet:
    """The sockets of one bind address: one per slot, or one shared unix socket."""

    address: BindAddress
    port: int
    sockets: list[socket.socket] = field(default_factory=list)

    def socket_for(self, slot: int) -> socket.socket:
        """The socket a shard of ``slot`` accepts on (unix sockets are shared)."""
        return self.sockets[0] if self.address.is_unix else self.sockets[slot]

    @property
    def url(self) -> str:
        return self.address.url(self.port)

    def resize(self, count: int, backlog: int) -> None:
        """Have ``count`` sockets: join new ones to the group, or close from the end.

        Only the last sockets are ever closed, so the kernel's index of each
        remaining socket in the group (its order of listening) stays its slot.
        Unix sockets are shared and never resized.
        """
        if self.address.is_unix:
            return
        while len(self.sockets) < count:
            add_tcp_socket(self, backlog)
        while len(self.sockets) > count:
            self.sockets.pop().close()

    def chown(self, uid: int | None, gid: int | None) -> None:
        """Give a unix socket's file to the user the shards run as (TCP: nothing to do)."""
        if self.address.unix_path is not None and (uid is not None or gid is not None):
            os.chown(self.address.unix_path, -1 if uid is None else uid,
                     -1 if gid is None else gid)

    def close(self, unlink: bool = True) -> None:
        """Close the sockets; ``unlink=False`` leaves a unix socket's file to a successor."""
        for sock in self.sockets:
            sock.close()
        if unlink and self.address.unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.address.unix_path)


def open_listeners(binds: tuple[BindAddress, ...], slots: int, backlog: int) -> list[ListenerSet]:
    """Bind every address for ``slots`` shards; raises OSError naming the address."""
    opened: list[ListenerSet] = []
    try:
        for address in binds:
            if address.is_unix:
                opened.append(_unix_listener(address, backlog))
            else:
                opened.append(_tcp_listeners(address, slots, backlog))
    except BaseException:
        for listener_set in opened:
            listener_set.close()
        raise
    return opened


def _tcp_listeners(address: BindAddress, slots: int, backlog: int) -> ListenerSet:
    family, sockaddr = _resolve(address)
    # The first socket binds without SO_REUSEPORT, so a port already served
    # (say, by a gshard still running) fails loudly instead of being shared.
    first = _tcp_socket(family, sockaddr, backlog, reuse_port_before_bind=False)
    listener_set = ListenerSet(address, first.getsockname()[1], [first])
    sockaddr = (sockaddr[0], listener_set.port, *sockaddr[2:])
    try:
        for _ in range(slots - 1):
            add_tcp_socket(listener_set, backlog, family, sockaddr)
    except BaseException:
        listener_set.close()
        raise
    return listener_set


def add_tcp_socket(
    listener_set: ListenerSet,
    backlog: int,
    family: int | None = None,
    sockaddr: tuple | None = None,
) -> socket.socket:
    """Join one more socket to the address's SO_REUSEPORT group (a new slot)."""
    if family is None or sockaddr is None:
        first = listener_set.sockets[0]
        family, sockaddr = first.family, first.getsockname()
    sock = _tcp_socket(family, sockaddr, backlog, reuse_port_before_bind=True)
    listener_set.sockets.append(sock)
    return sock


def _resolve(address: BindAddress) -> tuple[int, tuple]:
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {address.host!r}: {exc}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _tcp_socket(
    family: int, sockaddr: tuple, backlog: int, reuse_port_before_bind: bool
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port_before_bind:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot bind {_show(sockaddr)}: {exc.strerror}") from None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Accepted sockets inherit it: small responses leave without Nagle's delay.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.listen(backlog)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def _show(sockaddr: tuple) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _unix_listener(address: BindAddress, backlog: int) -> ListenerSet:
    """One unix socket shared by all shards (the kernel does not shard them)."""
    path = address.unix_path
    assert path is not None
    _remove_stale_unix_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind unix:{path}: {exc.strerror}") from None
    return ListenerSet(address, 0, [sock])


def _remove_stale_unix_socket(path: str) -> None:
    """Unlink a socket file left by a dead server, but never one still served."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EADDRINUSE, f"cannot bind unix:{path}: not a socket file")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
    else:
        raise OSError(errno.EADDRINUSE, f"cannot bind unix:{path}: a server is listening there")
    finally:
        probe.close()
