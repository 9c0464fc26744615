"""PEP 3333 without sockets: the environ, ``start_response`` and ``wsgi.input``.

Everything here is driven by plain callables (``pull`` for body bytes,
``write`` for output), so the WSGI rules are testable without a network.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any
from urllib.parse import unquote_to_bytes

from gshard.http.protocol import Request
from gshard.version import SERVER_SOFTWARE

# --- environ ----------------------------------------------------------------


def base_environ(
    server_name: str, server_port: str, url_scheme: str, multiprocess: bool,
    script_name: str = "",
) -> dict[str, Any]:
    """The keys that are the same for every request on one listener, built once.

    ``script_name`` is the mount point (``Config.script_name``, from
    ``$SCRIPT_NAME`` as in gunicorn): each request's PATH_INFO is what follows it.
    """
    environ = {
        "SCRIPT_NAME": script_name,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.errors": sys.stderr,
        # Greenlets run many requests of one process at once: the application
        # sees the same concurrency as under threads.
        "wsgi.multithread": True,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }
    if url_scheme == "https":
        environ["HTTPS"] = "on"  # what CGI-era code (and some frameworks) look at
    return environ


def split_target(target: str) -> tuple[str, str]:
    """(raw path, raw query) of a request target, whatever its form.

    Absolute-form keeps only its path, so an application sees the same
    PATH_INFO whether or not the client spoke to us as to a proxy. (CONNECT's
    authority-form never gets here: the parser answers CONNECT itself.)
    """
    if target[0] != "/":
        if target == "*":
            return "", ""
        slash = target.find("/", target.find("://") + 3)
        query_at = target.find("?")
        if slash == -1 or (query_at != -1 and query_at < slash):
            target = "/" + target[query_at:] if query_at != -1 else "/"
        else:
            target = target[slash:]
    path, _, query = target.partition("?")
    if "#" in path:
        path = path.partition("#")[0]
        query = ""
    elif "#" in query:
        query = query.partition("#")[0]
    return path, query


def make_environ(
    request: Request,
    base: dict[str, Any],
    wsgi_input: Any,
    remote: tuple[str, str],
) -> dict[str, Any]:
    """The environ for one request, starting from the listener's ``base``."""
    target = request.target
    path, query = split_target(target)
    if "%" in path:
        path = unquote_to_bytes(path.encode("latin-1")).decode("latin-1")
    mount = base["SCRIPT_NAME"]
    if mount and (path == mount or path.startswith(mount + "/")):
        # Served under a mount point: the application sees the path below it.
        # A path outside it reaches the application whole (gunicorn answers 500).
        path = path[len(mount):]
    environ = base.copy()
    environ["REQUEST_METHOD"] = request.method
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = query
    environ["RAW_URI"] = target
    environ["SERVER_PROTOCOL"] = request.http_version
    environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = remote
    environ["wsgi.input"] = wsgi_input
    content_length = request.content_length
    if content_length is not None:
        environ["CONTENT_LENGTH"] = str(content_length)
    for name, value in request.headers:
        if name == "CONTENT-TYPE":
            environ["CONTENT_TYPE"] = value
            continue
        if name == "CONTENT-LENGTH":
            continue
        key = _environ_keys.get(name)
        if key is None:
            key = _environ_key(name)
        if key in environ:
            joiner = "; " if key == "HTTP_COOKIE" else ","
            value = environ[key] + joiner + value
        environ[key] = value
    if target[0] != "/" and target != "*":
        # RFC 9112 3.2.2: an absolute-form target's authority is the host, whatever
        # Host says, so the application and a proxy in front agree on it.
        environ["HTTP_HOST"] = _authority(target)
    return environ


# Field name -> its environ key; requests repeat the same few names, and a
# lookup spares two new strings per field. Bounded: names come from clients.
_environ_keys: dict[str, str] = {}


def _environ_key(name: str) -> str:
    key = "HTTP_" + name.replace("-", "_")
    if len(_environ_keys) < 1024 and len(name) <= 64:
        _environ_keys[name] = key
    return key


def _authority(absolute_target: str) -> str:
    """``host[:port]`` of an absolute-form target, without any ``userinfo@``."""
    rest = absolute_target[absolute_target.find("://") + 3 :]
    for end in "/?#":
        rest = rest.partition(end)[0]
    return rest.rpartition("@")[2]


# --- wsgi.input -----------------------------------------------------------------


class InputStream:
    """``wsgi.input``: a file-like reader over body pieces from ``pull``.

    ``pull()`` returns the next piece of the de-chunked body, or ``b""`` at its
    end; it may raise ``ProtocolError`` if the client breaks framing. Reads
    stop at the end of the body, so an application can never read into the
    next pipelined request. Pieces are kept in a list and joined once per
    read, so ``read()`` of a large body copies it once, not once per piece.
    """

    __slots__ = ("_chunks", "_done", "_pull", "_size")

    def __init__(self, pull: Callable[[], bytes]) -> None:
        self._pull = pull
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False

    def _fill(self) -> bool:
        """Buffer one more piece; False at the end of the body."""
        if self._done:
            return False
        piece = self._pull()
        if not piece:
            self._done = True
            return False
        self._chunks.append(piece)
        self._size += len(piece)
        return True

    def end(self) -> None:
        """The request is over: reads past what is buffered see the end of the body.

        Drops ``pull``, which holds the exchange that holds this stream, so the
        exchange is freed by reference counting rather than by the cyclic
        garbage collector.
        """
        self._done = True
        self._pull = _no_more_body

    def _take(self, size: int) -> bytes:
        """The first ``size`` buffered bytes (``size`` <= what is buffered)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if size >= len(data):
            self._chunks = []
            self._size = 0
            return data
        self._chunks = [data[size:]]
        self._size = len(data) - size
        return data[:size]

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(self._size)
        while self._size < size and self._fill():
            pass
        return self._take(size)

    def read1(self, size: int = -1) -> bytes:
        """Return what one more piece brings, at most ``size`` bytes."""
        if not self._size:
            self._fill()
        return self._take(self._size if size < 0 else size)

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else None
        searched = 0  # bytes of the buffered pieces already searched for b"\n"
        index = 0  # the next piece to search
        while True:
            while index < len(self._chunks):
                piece = self._chunks[index]
                newline = piece.find(b"\n")
                if newline != -1:
                    end = searched + newline + 1
                    return self._take(end if limit is None else min(end, limit))
                searched += len(piece)
                index += 1
                if limit is not None and searched >= limit:
                    return self._take(limit)
            if not self._fill():
                return self._take(self._size if limit is None else limit)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def _no_more_body() -> bytes:
    return b""


class _EmptyInput(InputStream):
    """``wsgi.input`` for requests without a body; stateless, so shared."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(_no_more_body)
        self._done = True


EMPTY_INPUT = _EmptyInput()


# --- start_response -------------------------------------------------------------

_STATUS = re.compile(r"[1-9][0-9]{2} [^\x00-\x08\x0a-\x1f\x7f]*")
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A value that could end the line or leave latin-1 (PEP 3333 native strings).
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
     "te", "trailer", "trailers", "transfer-encoding", "upgrade"}
)


class ResponseStart:
    """The ``start_response`` callable for one request, checked per PEP 3333.

    It refuses what would corrupt the stream: a field with CR, LF or another
    control byte (header injection), a non-latin-1 value, a hop-by-hop field
    (the server owns framing), a malformed status. ``Connection: close`` is
    the one hop-by-hop field it accepts: it asks to end the connection after
    the response, as gunicorn allows.
    """

    __slots__ = (
        "close",
        "content_length",
        "has_date",
        "has_server",
        "headers",
        "headers_sent",
        "status",
        "write",
    )

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.content_length: int | None = None
        self.close = False
        self.has_date = False
        self.has_server = False
        self.headers_sent = False

    def __call__(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Any = None,
    ) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        if type(status) is not str or status not in _known_statuses:
            _check_status(status)
        self.headers = self._checked(headers)
        self.status = status
        return self.write

    def _checked(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The headers to send; records what the server must know about them."""
        self.content_length = None
        self.close = self.has_date = self.has_server = False
        if type(headers) is not list:
            raise TypeError("response headers must be a list")
        for item in headers:
            if type(item) is not tuple or len(item) != 2:
                raise TypeError(f"response header {item!r} is not a (name, value) tuple")
            try:
                kind = _known_fields.get(item)
            except TypeError:  # unhashable: not two strings, as _field_kind says
                kind = None
            if kind is None:
                kind = _field_kind(item)
            if kind is _ORDINARY:
                continue
            if kind is _LENGTH:
                length = int(item[1])
                if self.content_length is not None and self.content_length != length:
                    raise ValueError(f"invalid Content-Length {item[1]!r}")
                self.content_length = length
            elif kind is _DATE:
                self.has_date = True
            elif kind is _SERVER:
                self.has_server = True
            else:
                self.close = True
        if self.close:
            return [h for h in headers if h[0].lower() != "connection"]
        return headers


_known_statuses: set[str] = set()


def _check_status(status: Any) -> None:
    """Refuse a malformed status; remember a good one (bounded, like the fields)."""
    if type(status) is not str or _STATUS.fullmatch(status) is None:
        raise ValueError(f"invalid status {status!r}")
    if len(_known_statuses) < 1024:
        _known_statuses.add(status)


_ORDINARY, _LENGTH, _DATE, _SERVER, _CLOSE = "ordinary", "length", "date", "server", "close"
# Fields already validated, and what each means to the server: applications
# send the same few on every response, and a lookup is cheaper than the
# checks. Bounded in count and value length (4096 x 256 characters at most),
# since an application may put anything in a value.
_known_fields: dict[tuple[str, str], str] = {}


def _field_kind(item: tuple[str, str]) -> str:
    """Validate one response field; which of the kinds above it is."""
    name, value = item
    if type(name) is not str or type(value) is not str:
        raise TypeError(f"response header {item!r} is not two native strings")
    if _FIELD_NAME.fullmatch(name) is None or _UNSAFE_VALUE.search(value):
        raise ValueError(f"response header {item!r} has forbidden characters")
    lower = name.lower()
    kind = _ORDINARY
    if lower == "content-length":
        if not (value.isdigit() and value.isascii()):
            raise ValueError(f"invalid Content-Length {value!r}")
        kind = _LENGTH
    elif lower == "date":
        kind = _DATE
    elif lower == "server":
        kind = _SERVER
    elif lower in _HOP_BY_HOP:
        if lower != "connection" or value.strip().lower() != "close":
            raise ValueError(f"hop-by-hop header {name!r} is the server's to set")
        kind = _CLOSE
    if len(_known_fields) < 4096 and len(value) <= 256:
        _known_fields[item] = kind
    return kind


# --- wsgi.file_wrapper ---------------------------------------------------------------


class FileWrapper:
    """``wsgi.file_wrapper``; the server sends a real file with ``sendfile``."""

    def __init__(self, filelike: IO[bytes], blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while True:
            data = read(self.blksize)
            if not data:
                return
            yield data
