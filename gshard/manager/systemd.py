"""systemd's notify protocol, so ``Type=notify`` units see readiness and upgrades.

``READY=1`` once the first generation serves, ``RELOADING=1`` around a
reload, ``MAINPID=`` when an upgraded manager takes over (the unit keeps
running under the new process), ``STOPPING=1`` on shutdown. Without
``NOTIFY_SOCKET`` in the environment every call does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(*fields: str) -> bool:
    """Send ``KEY=VALUE`` fields to systemd; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError:
        return False
    return True
