"""What a connection needs from its shard and listener, built once per listener."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gshard.http.protocol import Limits
from gshard.http.proxy import Forwarded, ProxyProtocol


@dataclass
class Lifecycle:
    """Shard-wide serving state the connections consult.

    ``draining`` makes every response end its connection; ``idle`` maps the
    sockets parked between keep-alive requests to when they parked, so the
    shard's reaper can close those idle past ``--keep-alive`` and a drain can
    close them all at once.
    """

    draining: bool = False
    handled: int = 0
    idle: dict = field(default_factory=dict)


@dataclass
class ServeContext:
    """The application, limits and timeouts of one listener, shared by its connections."""

    app: Callable
    base_environ: dict[str, Any]
    limits: Limits
    keepalive: float
    header_timeout: float
    body_timeout: float
    lifecycle: Lifecycle
    # An ssl.SSLContext (typed Any: the manager imports this module and must
    # never import ssl) on TLS listeners.
    tls: Any = None
    proxy: ProxyProtocol | None = None
    forwarded: Forwarded | None = None
    # gunicorn's --no-sendfile: files are read and written instead.
    sendfile: bool = True
    # Called with each finished ``Exchange``, in order: the access log, and
    # whatever else reads finished requests. Empty, it costs nothing per request.
    # (Typed by arity only: the exchange imports this module, not the reverse.)
    finished: tuple[Callable[[Any], None], ...] = ()
    # Called with each exchange before the application runs (gunicorn's
    # pre_request hook); one raising fails the request with a 500.
    starting: tuple[Callable[[Any], None], ...] = ()
    # The shard's connection.Outbox, which batches small responses per loop pass
    # (typed Any: the connection imports this module, not the reverse); None
    # sends every response at once.
    outbox: Any = None
