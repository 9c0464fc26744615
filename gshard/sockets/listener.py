"""The listening sockets: one SO_REUSEPORT socket per shard slot and address.

The manager opens them once and holds them for its whole life. A shard only
borrows its slot's socket: when a shard exits (drained, crashed or killed),
the manager's reference keeps the socket and its accept queue alive, so the
connections waiting in it are served by the next shard of that slot instead
of being reset by the kernel.

A socket systemd passed (socket activation) is slot 0's; when it has
SO_REUSEPORT, the other slots get sockets joined to its group, otherwise all
shards share it, as they share a unix socket.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass, field

from gshard.addresses import BindAddress


@dataclass
class ListenerSet:
    """The sockets of one bind address: one per slot, or one that all shards share."""

    address: BindAddress
    port: int
    sockets: list[socket.socket] = field(default_factory=list)
    # One accept queue for all shards: always for unix sockets (the kernel
    # has no SO_REUSEPORT groups for them), and for a socket systemd passed
    # without SO_REUSEPORT.
    shared: bool = False
    # The LISTEN_FDNAMES name of a socket systemd passed. Its .socket unit
    # owns the address: gshard never unlinks or chowns its file.
    systemd_name: str | None = None

    def __post_init__(self) -> None:
        if self.address.is_unix:
            self.shared = True

    def socket_for(self, slot: int) -> socket.socket:
        """The socket a shard of ``slot`` accepts on."""
        return self.sockets[0] if self.shared else self.sockets[slot]

    @property
    def url(self) -> str:
        return self.address.url(self.port)

    @property
    def hook_address(self) -> str | tuple[str, int]:
        """The address as gunicorn's hooks see it in ``server.address``: a path or (host, port)."""
        return self.address.unix_path or (self.address.host, self.port)

    def resize(self, count: int, backlog: int) -> None:
        """Have ``count`` sockets: join new ones to the group, or close from the end.

        Only the last sockets are ever closed, so the kernel's index of each
        remaining socket in the group (its order of listening) stays its slot.
        A shared socket is never resized.
        """
        if self.shared:
            return
        while len(self.sockets) < count:
            add_tcp_socket(self, backlog)
        while len(self.sockets) > count:
            self.sockets.pop().close()

    def chown(self, uid: int | None, gid: int | None) -> None:
        """Give a unix socket's file to the user the shards run as (TCP: nothing to do)."""
        if self.systemd_name is not None:
            return  # SocketUser=/SocketMode= in the .socket unit decide
        if self.address.unix_path is not None and (uid is not None or gid is not None):
            os.chown(self.address.unix_path, -1 if uid is None else uid,
                     -1 if gid is None else gid)

    def close(self, unlink: bool = True) -> None:
        """Close the sockets; ``unlink=False`` leaves a unix socket's file to a successor."""
        for sock in self.sockets:
            sock.close()
        if unlink and self.address.unix_path is not None and self.systemd_name is None:
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
    first = listener_set.sockets[0]
    if family is None or sockaddr is None:
        family, sockaddr = first.family, first.getsockname()
    # A group's sockets must agree on IPV6_V6ONLY; a passed socket may be dual-stack.
    v6only = family == socket.AF_INET6 and bool(
        first.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
    sock = _tcp_socket(family, sockaddr, backlog, reuse_port_before_bind=True, v6only=v6only)
    listener_set.sockets.append(sock)
    return sock


def systemd_listener(
    sockets: list[socket.socket], name: str, shared: bool = True
) -> ListenerSet:
    """A socket systemd bound and passed (with the siblings gshard added, if any).

    Raises ValueError when it is not one gshard can serve on: a .socket unit
    for gshard needs ``ListenStream=`` and ``Accept=no``.
    """
    first = sockets[0]
    if (first.type != socket.SOCK_STREAM
            or first.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
            or not first.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
        raise ValueError(f"socket {name!r} passed by systemd is not a listening TCP or unix "
                         "stream socket (ListenStream= and Accept=no)")
    sockname = first.getsockname()
    if first.family == socket.AF_UNIX:
        if isinstance(sockname, bytes):  # the abstract namespace, shown as systemd writes it
            sockname = "@" + sockname[1:].decode("utf-8", "replace")
        address, port = BindAddress(unix_path=sockname), 0
    else:
        # Accepted sockets inherit it, as from the sockets gshard binds.
        first.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        address, port = BindAddress(host=sockname[0], port=sockname[1]), sockname[1]
    for sock in sockets:
        sock.set_inheritable(False)
    return ListenerSet(address, port, list(sockets), shared=shared, systemd_name=name)


def add_siblings(listener_set: ListenerSet, slots: int, backlog: int) -> None:
    """Give every slot its own socket in the group of a passed SO_REUSEPORT socket.

    All or nothing: on failure the siblings added are closed and the socket
    stays shared.
    """
    try:
        for _ in range(slots - len(listener_set.sockets)):
            add_tcp_socket(listener_set, backlog)
    except BaseException:
        for sock in listener_set.sockets[1:]:
            sock.close()
        del listener_set.sockets[1:]
        raise
    listener_set.shared = False


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
    family: int, sockaddr: tuple, backlog: int, reuse_port_before_bind: bool,
    v6only: bool = True,
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
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
