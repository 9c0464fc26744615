"""Addresses as gunicorn spells them: ``--bind`` targets and the statsd host.

Parsing only: nothing here resolves a name or opens a socket. Every process
reads these values (the manager binds them, shards report them, the status
shows them), so they live apart from the settings table that validates them.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class BindAddress:
    """Where to listen: a TCP host and port, or a unix socket path."""

    host: str = ""
    port: int = 0
    unix_path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.unix_path is not None

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        """The address as ``--bind`` spells it."""
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"

    def url(self, port: int | None = None) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return f"http://{host}:{self.port if port is None else port}"


DEFAULT_PORT = 8000


def parse_bind(text: str) -> BindAddress:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT``, ``HOST`` or ``unix:PATH``, read as gunicorn does."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError("unix: needs a path")
        return BindAddress(unix_path=path)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed IPv6 address {text!r}")
        port_text = rest[1:] if rest else str(DEFAULT_PORT)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address {host!r}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, str(DEFAULT_PORT)
        if ":" in host:
            raise ValueError(f"an IPv6 address needs brackets: [{host}]:{port_text}")
        host = host or "0.0.0.0"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port {port_text!r} (0-65535)")
    return BindAddress(host=host, port=int(port_text))


STATSD_PORT = 8125


def parse_statsd_host(text: str) -> tuple[int, str | tuple[str, int]]:
    """gunicorn's ``--statsd-host``: ``HOST:PORT`` (port 8125 if left out) or
    ``unix:PATH``; (socket family, address)."""
    if text.startswith("unix:"):
        path = text[5:].removeprefix("//")
        if not path:
            raise ValueError("unix: needs a path")
        return socket.AF_UNIX, path
    host, port = text, str(STATSD_PORT)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] or port
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if ":" in host:
        ipaddress.IPv6Address(host)  # ValueError if it is not one
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT or unix:PATH, got {text!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))

