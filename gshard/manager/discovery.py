"""Where a manager's control socket lives by default, and how commands find running managers.

gunicorn (25.1 on) opens its control socket by default at one fixed path
(``$XDG_RUNTIME_DIR/gunicorn.ctl``, else ``~/.gunicorn/gunicorn.ctl``), so a
second instance of the same user takes the first one's name. Here every
manager has a name of its own, ``PID-TOKEN.ctl``, in a per-user directory,
the first of these that is usable:

1. ``$XDG_RUNTIME_DIR/gshard`` (the per-user runtime directory systemd makes:
   the user's alone, in memory, emptied when the user's last session ends);
2. ``$HOME/.gshard`` (only if ``HOME`` is set: a container's user often has
   none, or a home on a read-only file system);
3. a private directory under the system's runtime directory: ``/run/gshard``
   for root, else ``gshard-UID`` in the temporary directory (``$TMPDIR``,
   else ``/tmp``: in a container with a read-only root file system, the
   writable volume mounted there).

A directory is used only if it is a real directory (not a link) that this
user owns and nobody else may enter: one another user made first could let
them put their own socket where ours is looked for. It is made mode 0700.

A manager whose socket has a path of its own (``--pid FILE``: ``FILE.ctl``,
or ``--control-socket PATH``) leaves a link to it in the same directory, so
the commands find it there too. The commands (``gshard status`` and the
others, without ``--pid``/``--bind``/``--control-socket``) look in every one
of these directories and ask each socket for its status. A name nobody
answers on (connection refused, or a link to nothing) belongs to a manager
that died without tidying up (SIGKILL, a container killed): it is ignored
and removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gshard.manager.control import MAX_SOCKET_PATH, exchange

SUFFIX = ".ctl"
# The system's runtime directory, where root's private directory goes.
SYSTEM_RUNTIME = "/run"


def candidate_dirs(environ: Mapping[str, str] | None = None,
                   uid: int | None = None) -> list[str]:
    """Where default control sockets live, in the order a manager tries them."""
    environ = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    dirs = []
    if environ.get("XDG_RUNTIME_DIR"):
        dirs.append(os.path.join(environ["XDG_RUNTIME_DIR"], "gshard"))
    if environ.get("HOME"):
        dirs.append(os.path.join(environ["HOME"], ".gshard"))
    if uid == 0:
        dirs.append(os.path.join(SYSTEM_RUNTIME, "gshard"))
    temp = environ.get("TMPDIR") or tempfile.gettempdir()
    dirs.append(os.path.join(temp, f"gshard-{uid}"))
    return list(dict.fromkeys(os.path.abspath(d) for d in dirs))


def trusted(directory: str, uid: int | None = None) -> bool:
    """``directory`` is a real directory of this user that nobody else may enter."""
    uid = os.getuid() if uid is None else uid
    try:
        info = os.lstat(directory)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == uid
            and not info.st_mode & 0o077)


def runtime_dir(environ: Mapping[str, str] | None = None, room: int = 0) -> str | None:
    """The first candidate directory that is, or can be made, ours alone, with ``room``
    bytes left for a name within a unix socket's path; None if none."""
    for directory in candidate_dirs(environ):
        if len(os.fsencode(directory)) + 1 + room > MAX_SOCKET_PATH:
            continue
        with contextlib.suppress(OSError):
            os.mkdir(directory, 0o700)
        if trusted(directory) and os.access(directory, os.W_OK | os.X_OK):
            return directory
    return None


def instance_path(environ: Mapping[str, str] | None = None) -> str | None:
    """A new name for this manager's socket, ``PID-TOKEN.ctl``, in the first usable
    directory; None if there is none."""
    name = f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
    directory = runtime_dir(environ, len(name))
    return None if directory is None else os.path.join(directory, name)


def link_to(target: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Leave a link to a socket at a path of its own where the commands look; the link's
    path, or None where there is no usable directory (the socket works when named)."""
    link = instance_path(environ)
    if link is None:
        return None
    try:
        os.symlink(os.path.abspath(target), link)
    except OSError:
        return None
    return link


@dataclass(frozen=True)
class Instance:
    """A running manager, as its control socket answered."""

    path: str  # the socket (or the link to it) it was found at
    status: dict[str, Any] | None  # its status document; None if it did not answer in time

    @property
    def pid(self) -> int | None:
        return None if self.status is None else self.status["manager"]["pid"]

    def describe(self) -> tuple[str, str, str, str]:
        """(pid, bind, app, started), for a list to choose from."""
        if self.status is None:
            return ("?", "(not answering)", "", self.path)
        manager = self.status["manager"]
        return (str(manager["pid"]), " ".join(manager["bind"]), manager["app"],
                manager["started"])


def running(environ: Mapping[str, str] | None = None, timeout: float = 2.0) -> list[Instance]:
    """Every manager of this user whose socket is in a default directory, stale names
    removed; one entry per manager (a socket and a link to it answer alike)."""
    found: dict[object, Instance] = {}
    for directory in candidate_dirs(environ):
        if not trusted(directory):
            continue
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if not name.endswith(SUFFIX):
                continue
            path = os.path.join(directory, name)
            instance = _ask(path, timeout)
            if instance is None:
                with contextlib.suppress(OSError):
                    os.unlink(path)  # a dead manager's; nobody will answer there again
                continue
            found.setdefault(instance.pid if instance.pid is not None else path, instance)
    return list(found.values())


def _ask(path: str, timeout: float) -> Instance | None:
    """The manager at ``path``, or None if nobody will ever answer there."""
    try:
        answer = exchange(path, "status", timeout)
    except (ConnectionRefusedError, FileNotFoundError):
        return None
    except OSError:  # busy past the timeout, or not ours to ask: listed, not removed
        return Instance(path, None)
    ok, _, message = answer.partition(" ")
    try:
        status = json.loads(message) if ok == "ok" else None
    except ValueError:
        status = None
    return Instance(path, status)
