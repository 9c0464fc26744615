"""``--reload``, the shard's side: tell the manager which files the application came from.

The manager never imports the application, so it cannot know the
application's modules; each shard, once loaded, reports the files of every
module imported from outside the standard library and site-packages
(``SOURCES`` messages), and the manager watches them (``manager/watcher.py``).
"""

from __future__ import annotations

import os
import socket
import sys
import sysconfig

from gshard import ipc

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
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # gshard/
    gshard_root = os.path.join(package, "")
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
