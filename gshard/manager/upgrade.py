"""Upgrading gshard itself (SIGUSR2) without closing a listener.

The running manager starts a *successor*: a new ``python -m gshard`` with the
same command line (so a new gshard or Python on disk takes effect), which
inherits every listening socket instead of binding, plus the write end of a
pipe. The successor boots its own generation of shards on those sockets and,
once all of them serve, writes ``ready`` to the pipe, takes over the pidfile
and the control socket, and tells systemd it is the main process now. Only
then does the old manager drain its shards and exit.

If the successor fails (its application does not load, gshard does not start,
it crashes), the pipe closes without ``ready``: the old manager notices the
exit and keeps serving. The listeners never close in between, so no queued
connection is reset.

This module does the process and pipe work; when an upgrade may start, when
the old manager hands over and what a failed one changes are rules of the
manager's state machine (``upgrade_rules``, a part of ``fsm``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

from gshard.addresses import BindAddress
from gshard.sockets.listener import ListenerSet, systemd_listener

ENV_LISTENERS = "GSHARD_INHERITED_LISTENERS"
ENV_READY_FD = "GSHARD_UPGRADE_READY_FD"
# The control socket's path when the predecessor chose it (no --pid or
# --control-socket): the successor takes the same name over, as it does a
# path given on the command line, so the commands keep finding one manager.
ENV_CONTROL = "GSHARD_INHERITED_CONTROL_SOCKET"
READY = b"ready\n"


@dataclass
class Successor:
    """A new manager booting; ``ready_r`` becomes readable when it serves or dies."""

    pid: int
    ready_r: int


def start_successor(argv: Sequence[str], listeners: list[ListenerSet],
                    control_path: str | None = None) -> Successor:
    """Spawn ``python -m gshard ARGV`` inheriting the listeners and a ready pipe (and the
    control socket's name, ``control_path``, if this manager chose it).

    ``posix_spawn`` runs no Python in the child, so none of this manager's
    signal handling can run there between fork and exec.
    """
    ready_r, ready_w = os.pipe()
    inherited = []
    for listener_set in listeners:
        for sock in listener_set.sockets:
            sock.set_inheritable(True)
        inherited.append({
            "bind": listener_set.address.url(),
            "fds": [sock.fileno() for sock in listener_set.sockets],
            "shared": listener_set.shared,
            "systemd_name": listener_set.systemd_name,
        })
    os.set_inheritable(ready_w, True)
    env = dict(os.environ)
    env[ENV_LISTENERS] = json.dumps(inherited)
    env[ENV_READY_FD] = str(ready_w)
    if control_path is not None:
        env[ENV_CONTROL] = control_path
    try:
        pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "gshard", *argv], env)
    except BaseException:
        os.close(ready_r)
        raise
    finally:
        os.close(ready_w)
    return Successor(pid, ready_r)


@dataclass
class Inheritance:
    """What a successor received from the manager it replaces."""

    listeners: list[dict]
    ready_fd: int
    control_path: str | None = None  # the predecessor's control socket, to take over

    def adopt(self, binds: tuple[BindAddress, ...]) -> list[ListenerSet]:
        """The inherited sockets as listener sets, in the order of ``binds``.

        Refuses (ValueError) if they do not match the command line, which is
        the predecessor's own unless its environment was tampered with.
        Sockets systemd passed replaced --bind: they are taken as they are.
        """
        if any(entry.get("systemd_name") is not None for entry in self.listeners):
            return [systemd_listener([socket.socket(fileno=fd) for fd in entry["fds"]],
                                     entry["systemd_name"], entry["shared"])
                    for entry in self.listeners]
        urls = [entry["bind"] for entry in self.listeners]
        if urls != [address.url() for address in binds]:
            raise ValueError(f"inherited listeners {urls} do not match --bind")
        adopted = []
        for address, entry in zip(binds, self.listeners, strict=True):
            sockets = [socket.socket(fileno=fd) for fd in entry["fds"]]
            for sock in sockets:
                sock.set_inheritable(False)
            port = 0 if address.is_unix else sockets[0].getsockname()[1]
            adopted.append(ListenerSet(address, port, sockets))
        return adopted

    def announce_ready(self) -> None:
        """Tell the predecessor this manager serves; it will drain and exit."""
        with contextlib.suppress(OSError):
            os.write(self.ready_fd, READY)
        with contextlib.suppress(OSError):
            os.close(self.ready_fd)


def inheritance(environ: MutableMapping[str, str]) -> Inheritance | None:
    """The inheritance passed in ``environ``, removed from it so shards never see it."""
    listeners = environ.pop(ENV_LISTENERS, None)
    ready_fd = environ.pop(ENV_READY_FD, None)
    control_path = environ.pop(ENV_CONTROL, None)
    if listeners is None or ready_fd is None:
        return None
    return Inheritance(json.loads(listeners), int(ready_fd), control_path)


def read_outcome(ready_r: int) -> bool | None:
    """True when the successor said ready, False when its pipe closed, None: not yet."""
    try:
        data = os.read(ready_r, 64)
    except BlockingIOError:
        return None
    return data.startswith(READY)
