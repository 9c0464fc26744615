"""gunicorn's per-request hooks: ``pre_request`` and ``post_request``, with gunicorn's
``req`` and ``resp`` built from an ``Exchange``.

They cost nothing when undefined: ``request_hooks`` returns empty tuples, and
the connection loops over them. With both, the ``Request`` built for
``pre_request`` is kept until ``post_request`` (hooks may set attributes on it).
"""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

from gshard.config import Config
from gshard.hooks import Worker, call
from gshard.http.exchange import Exchange


class Request:
    """gunicorn's ``req`` for one exchange: the request line and header fields.

    ``headers`` is a list of (UPPER-CASE NAME, value), as gunicorn's parser
    gives it; ``remote_addr`` is the peer (gshard's REMOTE_ADDR before any
    forwarded header is believed). Hooks may set attributes on it:
    ``post_request`` gets the object ``pre_request`` got.
    """

    def __init__(self, exchange: Exchange) -> None:
        request = exchange.request
        environ = exchange.environ
        self.method = request.method
        self.uri = request.target
        parts = urlsplit(request.target)
        self.path = parts.path
        self.query = parts.query
        self.fragment = parts.fragment
        version = request.http_version  # "HTTP/1.1"
        self.version = (int(version[5]), int(version[7]))
        self.headers = list(request.headers)
        self.trailers: list[tuple[str, str]] = []
        self.scheme = environ["wsgi.url_scheme"]
        self.body = environ["wsgi.input"]
        port = environ.get("REMOTE_PORT")
        self.remote_addr = self.peer_addr = (
            (environ["REMOTE_ADDR"], int(port)) if port else environ["REMOTE_ADDR"]
        )
        self._keep_alive = request.keep_alive

    def should_close(self) -> bool:
        return not self._keep_alive


@dataclasses.dataclass
class Response:
    """gunicorn's ``resp`` once a request is finished.

    ``status`` is None when no response went out (the client left first);
    ``sent`` counts body bytes, ``response_length`` is the Content-Length
    the application declared, if any.
    """

    status: str | None
    status_code: int | None
    headers: list[tuple[str, str]]
    sent: int
    response_length: int | None
    headers_sent: bool

    @classmethod
    def of(cls, exchange: Exchange) -> Response:
        status = exchange.status
        return cls(status, int(status[:3]) if status else None, exchange.response_headers,
                   exchange.sent, exchange.start.content_length, status is not None)


def request_hooks(config: Config, worker: Worker) -> tuple[tuple, tuple]:
    """The ``(starting, finished)`` callables of ``ServeContext`` for the defined request hooks.

    Both tuples are empty when neither hook is defined. With both, the
    ``Request`` built for ``pre_request`` is kept until ``post_request``.
    """
    pre, post = config.pre_request, config.post_request
    started: dict[Exchange, Request] = {}
    starting: tuple = ()
    finished: tuple = ()
    if pre is not None:
        def pre_request(exchange: Exchange) -> None:
            req = Request(exchange)
            if post is not None:
                started[exchange] = req
            pre(worker, req)  # raising: the exchange logs it and answers 500

        starting = (pre_request,)
    if post is not None:
        def post_request(exchange: Exchange) -> None:
            req = started.pop(exchange, None) or Request(exchange)
            call(config, "post_request", worker, req, exchange.environ, Response.of(exchange))

        finished = (post_request,)
    return starting, finished
