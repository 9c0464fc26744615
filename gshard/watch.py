"""``--reload``: a hot reload when a source file of the application changes.

The manager never imports the application, so it cannot know the
application's modules; each shard, once loaded, tells it (``report_sources``:
the files of every module imported from outside the standard library and
site-packages, in ``SOURCES`` messages). The manager's ``Watcher`` watches
those plus ``--reload-extra-file`` (globs allowed) by comparing modification
times once a second, from the manager's own poll loop: no thread (a thread
in a process that forks is a hazard), no dependency, and a few dozen
``stat`` calls a second cost nothing. A change becomes ``fsm.Reload``, so
new code goes live through the same lossless handover as ``gshard reload``,
and code that fails to load (a syntax error) leaves the old generation
serving, with the error logged. The watched set only grows: a file the
failed generation added is watched too, so fixing it reloads again.
"""

from __future__ import annotations

import glob
import os
import socket
import sys
import sysconfig
from collections.abc import Iterable

from gshard import ipc

# How often the manager compares modification times.
POLL_INTERVAL = 1.0
# Paths per message, well within a datagram.
_BATCH = 100


def _library_roots() -> tuple[str, ...]:
    """Where code the application did not write lives: stdlib and installed packages."""
    roots = {sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    return tuple(os.path.join(os.path.realpath(root), "") for root in roots)


def application_sources() -> list[str]:
    """Source files of the loaded modules that belong to the application."""
    roots = _library_roots()
    gshard_root = os.path.join(os.path.dirname(os.path.realpath(__file__)), "")
    found = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        path = os.path.realpath(path)
        if not path.startswith((*roots, gshard_root)) and os.path.isfile(path):
            found.add(path)
    return sorted(found)


def report_sources(channel: socket.socket) -> None:
    """In a loaded shard: tell the manager which files to watch."""
    sources = application_sources()
    for start in range(0, len(sources), _BATCH):
        ipc.send(channel, ipc.Kind.SOURCES, "\n".join(sources[start:start + _BATCH]))


class Watcher:
    """Modification times of the watched files, compared at most once a second."""

    def __init__(self, extra_files: Iterable[str]) -> None:
        self.patterns = tuple(extra_files)
        self.sources: set[str] = set()
        self.stamps: dict[str, float | None] = {}
        self.next_check = 0.0
        self._stamp_new()

    def add(self, paths: Iterable[str]) -> None:
        self.sources.update(path for path in paths if path)
        self._stamp_new()

    def changed(self, now: float) -> list[str]:
        """The files changed (or gone, or back) since the last check; at most once a second."""
        if now < self.next_check:
            return []
        self.next_check = now + POLL_INTERVAL
        changed = []
        for path in sorted(self._paths() | set(self.stamps)):  # removed ones too
            stamp = _mtime(path)
            if path in self.stamps and self.stamps[path] != stamp:
                changed.append(path)
            self.stamps[path] = stamp
        return changed

    def _paths(self) -> set[str]:
        paths = set(self.sources)
        for pattern in self.patterns:
            matches = glob.glob(pattern, recursive=True)
            paths.update(os.path.abspath(path) for path in matches or [pattern])
        return paths

    def _stamp_new(self) -> None:
        for path in self._paths():
            self.stamps.setdefault(path, _mtime(path))


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime_ns / 1e9
    except OSError:
        return None
