"""``--log-syslog``: the error and access logs sent to syslog, addressed and tagged as in gunicorn.

``parse_address`` is pure (the config check uses it); ``handler`` builds the
``logging.handlers.SysLogHandler`` in each process that logs. Messages are
tagged ``gunicorn.PREFIX.error`` / ``.access`` like gunicorn's, so the syslog
filters of a gunicorn deployment keep matching.
"""

from __future__ import annotations

import logging
import logging.handlers
import socket
from typing import Any

FACILITIES = tuple(logging.handlers.SysLogHandler.facility_names)


def parse_address(text: str) -> tuple[int | None, Any]:
    """(socket type, address) of ``udp://HOST[:PORT]``, ``tcp://...`` or ``unix://PATH[#dgram]``.

    A unix socket without ``#dgram`` or ``#stream`` gets None: SysLogHandler
    then tries both, as with gunicorn.
    """
    if text.startswith("unix://"):
        path, _, kind = text[len("unix://"):].partition("#")
        if not path:
            raise ValueError("unix:// needs a path")
        types = {"": None, "dgram": socket.SOCK_DGRAM, "stream": socket.SOCK_STREAM}
        if kind not in types:
            raise ValueError("a unix socket type is #dgram or #stream")
        return types[kind], path
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("udp", "tcp"):
        raise ValueError("must be udp://HOST:PORT, tcp://HOST:PORT or unix://PATH")
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port[1:]
    else:
        host, _, port = rest.partition(":")
    if port and not port.isdigit():
        raise ValueError(f"{port!r} is not a port number")
    kind = socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM
    return kind, (host.lower() or "localhost", int(port) if port else 514)


def handler(config: Any, log_name: str) -> logging.Handler:
    """A SysLogHandler for the ``error`` or ``access`` log of ``config``."""
    kind, address = parse_address(config.syslog_addr)
    prefix = config.syslog_prefix or (config.proc_name or config.app).replace(":", ".")
    result = logging.handlers.SysLogHandler(
        address=address,
        facility=logging.handlers.SysLogHandler.facility_names[config.syslog_facility],
        socktype=kind,
    )
    result.setFormatter(logging.Formatter(
        f"gunicorn.{prefix}.{log_name}: [%(process)d] %(message)s"))
    return result
