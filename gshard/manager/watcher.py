"""``--reload``, the manager's side: a hot reload when a source file of the application changes.

The manager never imports the application, so it cannot know the
application's modules; each shard, once loaded, tells it (``shard/sources.py``:
the files of every module imported from outside the standard library and
site-packages, in ``SOURCES`` messages). The manager's ``Watcher`` watches
those plus ``--reload-extra-file`` (globs allowed) by comparing modification
times once a second, from the manager's own poll loop: no thread (a thread
in a process that forks is a hazard), no dependency, and a few dozen
``stat`` calls a second cost nothing. A change becomes ``events.Reload``, so
new code goes live through the same lossless handover as ``gshard reload``,
and code that fails to load (a syntax error) leaves the old generation
serving, with the error logged. The watched set only grows: a file the
failed generation added is watched too, so fixing it reloads again.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

# How often the manager compares modification times.
POLL_INTERVAL = 1.0


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
