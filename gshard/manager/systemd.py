"""systemd's notify protocol, so ``Type=notify`` units see readiness, reloads and stops.

``READY=1`` once the first generation serves and again once a reload ends
(served or failed: either way the service is back to a known state),
``RELOADING=1`` with ``MONOTONIC_USEC=`` when a reload begins (the timestamp
is what lets ``Type=notify-reload`` match the reload it asked for with the
answer), ``STOPPING=1`` the moment a stop begins (a lame duck included),
``MAINPID=`` when an upgraded manager takes over (the unit keeps running
under the new process), and a ``STATUS=`` line with each, which
``systemctl status`` shows. Without ``NOTIFY_SOCKET`` in the environment
every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time

from gshard.manager.events import ServiceState

_STATE_FIELDS = {
    ServiceState.READY: "READY=1",
    ServiceState.RELOADING: "RELOADING=1",
    ServiceState.STOPPING: "STOPPING=1",
}


def notify_state(state: ServiceState, message: str) -> bool:
    """Tell systemd the service's ``state``, with ``message`` as its status line."""
    fields = [_STATE_FIELDS[state], f"STATUS={message}"]
    if state is ServiceState.RELOADING:
        fields.append(f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
    return notify(*fields)


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
