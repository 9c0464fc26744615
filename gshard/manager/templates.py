"""``--preload``, the manager's side: one template process per generation loads the
application once and forks that generation's shards, which share its memory
copy-on-write. The template process itself is ``shard/template.py``.

gunicorn's ``--preload`` imports the application in the master, so its HUP
cannot load new code. Here the manager still never imports the application
nor patches anything: for each generation it forks a template, which patches
the standard library (as a shard does), loads the application
(``shard.boot.load``), then waits for spawn requests on its own socketpair. A
request carries the slot, the generation and the slot's listening sockets
(``SCM_RIGHTS``: the template holds no listener of its own, so a listener the
manager closes after ``TTOU`` is really closed, and a slot added by ``TTIN``
after the template started gets its socket). Respawns of a crashed slot come
from the same template, so they share its memory too.

Who is a shard's parent. The manager must see each shard's exit status
(``events.Exited``) even if a template dies, so the template double-forks: an
intermediate child forks the shard, sends its pid back and exits, and the
manager, a child subreaper (``PR_SET_CHILD_SUBREAPER``), becomes the shard's
parent. The manager then reaps shards exactly as without ``--preload`` and
the shard's check that its parent is the manager still holds. The
alternative, a template that reaps its shards and reports their exit over
the message socket, would lose the statuses of every shard of a template
that crashed, and add a relay for what the kernel already delivers.

A template whose application fails to load does not fail by itself: each
shard it forks reports the failure and exits as a shard that failed to load
does today, so the state machine sees the same boot failure and the old
generation keeps serving. A template is told to exit (its socket closed) once
its generation neither serves nor boots and has no shard left.

A shard's boot clock starts when the manager asks for it, so
``--boot-timeout`` bounds the template's import too: a template that has not
forked a shard asked for within it is killed (``loop``), and the generation
fails as one whose shard did not boot in time.

The spawn is asynchronous: the manager sends the request and carries on.
The shard's first act is to announce itself on the shards' message socket
(``SPAWNED``), so its other messages, and its exit (the manager reads
messages before it handles what it reaped), reach the manager after it has
learned the shard exists. A
template that dies with spawns pending makes the first of them a shard that
exited (the template's own pid and status), so a booting generation fails
and a serving slot is respawned, from a new template (which imports the
code on disk then: a template that dies costs that generation its sharing
and, if the code changed since, its uniformity; the next reload restores both).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from gshard import log

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Make orphaned descendants (shards whose forker exited) children of this process."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


@dataclass
class Template:
    """The manager's handle on one generation's template."""

    pid: int
    generation: int
    sock: socket.socket
    # Requests not yet answered, by the Worker's age: (slot, the shard's Worker,
    # when it was asked for: the shard's boot clock starts then, so
    # --boot-timeout bounds the template's import of the application too).
    pending: dict[int, tuple[int, Any, float]] = field(default_factory=dict)
    closed: bool = False  # told to exit; kept until reaped


@dataclass(frozen=True)
class Spawned:
    """A shard a template forked (or, with ``exited`` set, a spawn its template lost)."""

    pid: int
    slot: int
    generation: int
    worker: Any
    asked: float  # when the manager asked for it (time.monotonic())
    exited: int | None = None  # the exit status of a lost spawn's template


class Templates:
    """The manager's side: the running templates, by generation."""

    def __init__(self, fork_template: Callable[[int, socket.socket, list[socket.socket]], int]
                 ) -> None:
        # fork_template(generation, the template's end, sockets the child must close) -> pid
        self._fork_template = fork_template
        self.by_generation: dict[int, Template] = {}
        # Templates told to exit (or found dead), until reaped.
        self.orphans: dict[int, Template] = {}

    def spawn(self, slot: int, generation: int, worker: Any,
              sockets: list[socket.socket], now: float) -> None:
        """Ask the generation's template (started if need be) for a shard in ``slot``."""
        template = self.by_generation.get(generation)
        if template is None or template.closed:
            template = self._start(generation)
        request = f"{slot} {generation} {worker.age}".encode("ascii")
        try:
            socket.send_fds(template.sock, [request], [s.fileno() for s in sockets])
        except OSError:  # it died and is not reaped yet: a new one for this request
            self._forget(template)
            template = self._start(generation)
            socket.send_fds(template.sock, [request], [s.fileno() for s in sockets])
        template.pending[worker.age] = (slot, worker, now)

    def _start(self, generation: int) -> Template:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        others = [t.sock for t in self.by_generation.values() if not t.closed] + [ours]
        pid = self._fork_template(generation, theirs, others)
        theirs.close()
        template = self.by_generation[generation] = Template(pid, generation, ours)
        return template

    def _forget(self, template: Template) -> None:
        if not template.closed:
            template.sock.close()
            template.closed = True
        self.orphans[template.pid] = template

    def spawned(self, detail: str) -> Spawned | None:
        """The shard a ``SPAWNED`` message announces; None if it is not one we asked for."""
        try:
            pid, generation, age = (int(word) for word in detail.split())
        except ValueError:
            return None
        template = self.by_generation.get(generation)
        entry = template.pending.pop(age, None) if template is not None else None
        if entry is None:
            return None
        slot, worker, asked = entry
        return Spawned(pid, slot, generation, worker, asked)

    def reaped(self, pid: int, status: int) -> Spawned | None:
        """A child exited. A template's pending spawns are lost: the first becomes a
        shard that exited with the template's status."""
        template = self.orphans.pop(pid, None)
        for generation, candidate in list(self.by_generation.items()):
            if candidate.pid == pid:
                template = self.by_generation.pop(generation)
        if template is None:
            return None
        if not template.closed:
            template.sock.close()
        if not template.pending:
            return None
        log.error_log.error("The template of generation %d (pid %d) exited with %d spawns "
                            "pending", template.generation, pid, len(template.pending))
        slot, worker, asked = next(iter(template.pending.values()))
        return Spawned(pid, slot, template.generation, worker, asked, exited=status)

    def overdue(self, now: float, boot_timeout: Callable[[int], float]) -> list[Template]:
        """Templates that have not forked a shard asked for longer ago than their
        generation's ``boot_timeout``: still loading the application, or stuck in it."""
        return [template for template in self.by_generation.values()
                if template.pending and not template.closed
                and now - min(asked for _, _, asked in template.pending.values())
                > boot_timeout(template.generation)]

    def is_template(self, pid: int) -> bool:
        return pid in self.orphans or any(t.pid == pid for t in self.by_generation.values())

    def prune(self, needed: Collection[int]) -> None:
        """Tell the templates of generations not ``needed`` (that neither serve,
        boot nor have a shard) to exit (they do on end of file); reaping forgets them."""
        for generation, template in list(self.by_generation.items()):
            if generation not in needed and not template.pending:
                del self.by_generation[generation]
                self._forget(template)

    def close(self) -> list[int]:
        """Tell every template to exit; their pids, which the manager must reap before it
        exits (a template left behind would be handed to init as a zombie)."""
        pids = []
        for template in [*self.by_generation.values(), *self.orphans.values()]:
            if not template.closed:
                template.sock.close()
            with contextlib.suppress(ProcessLookupError):
                os.kill(template.pid, signal.SIGTERM)
            pids.append(template.pid)
        self.by_generation.clear()
        self.orphans.clear()
        return pids
