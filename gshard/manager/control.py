"""The control socket: how ``gshard reload``, ``status``, ``scale``... reach a running manager.

A signal cannot carry an answer back, and a deploy script needs one: did the
new code go live or not? The manager listens on a unix socket (mode 0600);
a client sends one command line and reads one answer line::

    > reload
    < ok Generation 3 is serving; generation 2 is draining
    < failed Reload failed, generation 2 keeps serving: the application failed ...

The manager side is non-blocking and driven by the manager's poll loop. A
command whose outcome comes later leaves its client waiting: on the outcome of
the reload that covers its request (``wait_for_reload``, ``finish_reload``),
or on a condition the loop checks after each round (``wait`` and
``check_waiters``). Where the socket is when no path is given, and how the
commands find it, is ``discovery``'s to say.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

MAX_LINE = 1024
# A unix socket's path must fit in sockaddr_un (108 bytes with the final NUL).
MAX_SOCKET_PATH = 107
# Clients served at once; past it new ones wait in the backlog, so a stuck
# script cannot use up the manager's descriptors.
MAX_CLIENTS = 64


# A waiting command's outcome: None while undecided, else (ok, message).
Outcome = tuple[bool, str] | None


@dataclass
class Waiter:
    """A client waiting until ``check`` decides its command's outcome."""

    client: socket.socket
    check: Callable[[], Outcome]
    # The answer if the manager exits first (for ``stop``, the outcome itself).
    at_exit: tuple[bool, str] = (False, "the server is shutting down")


@dataclass
class ControlServer:
    """Accepts control clients and remembers who waits for which outcome."""

    path: str
    sock: socket.socket
    inode: int  # of the socket file, to tell ours from a successor's at the same path
    link: str | None = None  # a link to ``path`` where the commands look (``discovery``)
    clients: dict[socket.socket, bytes] = field(default_factory=dict)  # partial command lines
    # Clients waiting on a reload, by the ticket their request carries (``Reload.ticket``).
    reload_waiters: dict[int, socket.socket] = field(default_factory=dict)
    waiters: list[Waiter] = field(default_factory=list)
    _tickets: itertools.count = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def open(cls, path: str, link: Callable[[str], str | None] | None = None) -> ControlServer:
        """Listen at ``path``, taking the name over from a previous manager's socket.

        The socket listens under a temporary name first and is then renamed
        into place, so whoever finds ``path`` finds a socket that answers (a
        name that refuses connections is taken for a dead manager's and
        removed). ``link``, called with the path, leaves a link to it where
        the commands look and returns where.
        """
        temp = f"{path}.{os.getpid()}.tmp"
        if len(os.fsencode(temp)) > MAX_SOCKET_PATH:
            temp = path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(temp)
            sock.listen(16)
            if temp != path:
                os.replace(temp, path)  # a previous manager's; the new one takes the name over
        except OSError:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        finally:
            os.umask(old_umask)
        sock.setblocking(False)
        server = cls(path, sock, os.stat(path).st_ino)
        server.link = link(path) if link is not None else None
        return server

    def descriptors(self) -> list[socket.socket]:
        if len(self.clients) >= MAX_CLIENTS:
            return list(self.clients)
        return [self.sock, *self.clients]

    def accept(self) -> None:
        with contextlib.suppress(OSError):  # gone already, or out of descriptors
            client, _ = self.sock.accept()
            client.setblocking(False)
            self.clients[client] = b""

    def read(self, client: socket.socket) -> str | None:
        """A complete command from ``client``, or None if it is not complete yet."""
        try:
            data = client.recv(MAX_LINE)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return None
        buffered = self.clients[client] + data
        line, newline, _ = buffered.partition(b"\n")
        if not newline:
            if len(buffered) > MAX_LINE:
                self.reply(client, False, "command too long")
                return None
            self.clients[client] = buffered
            return None
        self.clients[client] = b""
        return line.decode("utf-8", "replace").strip()

    def reply(self, client: socket.socket, ok: bool, message: str) -> None:
        """Answer and hang up; a client that went away is simply forgotten."""
        with contextlib.suppress(OSError):
            client.setblocking(True)
            client.settimeout(1.0)
            client.sendall(f"{'ok' if ok else 'failed'} {message}\n".encode())
        self._drop(client)

    def wait_for_reload(self, client: socket.socket) -> int:
        """Park ``client`` until the reload that covers its request ends; its ticket."""
        ticket = next(self._tickets)
        self.reload_waiters[ticket] = client
        return ticket

    def finish_reload(self, ok: bool, message: str, tickets: Iterable[int] | None) -> None:
        """Answer the clients whose requests the reload covered (``None``: all of them)."""
        for ticket in list(self.reload_waiters) if tickets is None else tickets:
            client = self.reload_waiters.pop(ticket, None)
            if client is not None:
                self.reply(client, ok, message)

    def wait(self, waiter: Waiter) -> None:
        """Answer ``waiter.client`` once ``waiter.check`` decides (checked after each round)."""
        self.waiters.append(waiter)

    def check_waiters(self) -> None:
        for waiter in list(self.waiters):
            outcome = waiter.check()
            if outcome is not None:
                self.reply(waiter.client, *outcome)

    def _drop(self, client: socket.socket) -> None:
        self.clients.pop(client, None)
        for ticket in [t for t, waiting in self.reload_waiters.items() if waiting is client]:
            del self.reload_waiters[ticket]
        self.waiters = [w for w in self.waiters if w.client is not client]
        client.close()

    def close(self) -> None:
        """Close, unlinking the path only if it is still ours (an upgrade may own it now)."""
        for waiter in list(self.waiters):
            self.reply(waiter.client, *waiter.at_exit)
        for client in list(self.clients):
            self._drop(client)
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        if self.link is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.link)
        self.sock.close()

    def forget(self) -> None:
        """In a forked child: close the descriptors, leaving the files to the manager (a
        child holding the listening socket would keep a dead manager's name answering)."""
        for client in self.clients:
            client.close()
        self.sock.close()


def exchange(path: str, command: str, timeout: float) -> str:
    """Send one command to the manager at ``path``; its answer line (OSError if unreachable,
    TimeoutError if it does not answer within ``timeout``)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        return receive_answer(sock).decode("utf-8", "replace").strip()


def receive_answer(sock: socket.socket) -> bytes:
    """The manager's answer line, newline included (what came, if it hung up first)."""
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


def send_command(path: str, command: str, timeout: float) -> tuple[bool, str]:
    """Send one command to the manager at ``path``; (ok, message) from its answer."""
    try:
        answer = exchange(path, command, timeout)
    except TimeoutError:
        return False, f"no answer from the manager within {timeout:g}s"
    except OSError as exc:
        return False, f"cannot reach the manager at {path}: {exc.strerror or exc}"
    status, _, message = answer.partition(" ")
    if status not in ("ok", "failed"):
        return False, "the manager closed the connection without an answer"
    return status == "ok", message
