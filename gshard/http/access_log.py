"""The access log's records: gunicorn's ``--access-logformat`` atoms over a finished exchange.

Tooling written for gunicorn's access log keeps working because each record
is the one gunicorn's logger makes: the message is the configured format, and
the record's ``args`` are gunicorn's atoms (``record.args["h"]``,
``record.args["{user-agent}i"]``...), with gunicorn's values and types, so a
``logconfig_dict`` formatter written for gunicorn (a JSON access log) reads
them unchanged. The atoms are computed when something asks for them: a short
format costs only the atoms it names.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from gshard.http.exchange import Exchange
from gshard.log import access_log


class AccessAtoms(Mapping):
    """gunicorn's atoms of one finished exchange, as gunicorn's ``SafeAtoms`` answers them.

    A name gunicorn does not know reads ``-``, header (``{name}i``), response
    header (``{name}o``) and environ (``{name}e``) names are read without
    regard to case, and text values have their double quotes escaped; so a
    format written for gunicorn never raises and prints what gunicorn's would.
    """

    __slots__ = ("_body_bytes", "_duration", "_environ", "_response_headers", "_status")

    def __init__(self, environ: dict[str, Any], status: str | None,
                 response_headers: list[tuple[str, str]], body_bytes: int,
                 duration: float) -> None:
        self._environ = environ
        self._status = status
        self._response_headers = response_headers
        self._body_bytes = body_bytes
        self._duration = duration

    def __getitem__(self, key: str) -> Any:
        if key.startswith("{"):
            value = self._named(key.lower())
        else:
            atom = _ATOMS.get(key)
            value = "-" if atom is None else atom(self)
        return value.replace('"', '\\"') if isinstance(value, str) else value

    def __bool__(self) -> bool:
        return True  # logging asks before it takes a mapping as a record's args

    def __iter__(self) -> Iterator[str]:
        """Every atom gunicorn's dict holds: its own, then each request header, response
        header and environ key (lower-cased, as gunicorn names them)."""
        yield from _ATOMS
        yield from (f"{{{name}}}i" for name in _request_header_names(self._environ))
        yield from (f"{{{name.lower()}}}o" for name, _ in self._response_headers)
        yield from (f"{{{name.lower()}}}e" for name in self._environ)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def _named(self, key: str) -> Any:
        """A ``{name}i``, ``{name}o`` or ``{name}e`` atom (``key`` lower-cased), or ``-``."""
        if len(key) > 3 and key[-2] == "}":
            name, kind = key[1:-2], key[-1]
            found: Any = None
            if kind == "i":
                environ_key = _REQUEST_HEADER_KEYS.get(name)
                found = self._environ.get(environ_key or "HTTP_" + name.upper().replace("-", "_"))
            elif kind == "o":
                found = next((v for n, v in self._response_headers if n.lower() == name), None)
            elif kind == "e":
                found = next((v for n, v in self._environ.items() if n.lower() == name), None)
            if found is not None:
                return found
        return "-"

    def _request_line(self) -> str:
        env = self._environ
        return f"{env['REQUEST_METHOD']} {env['RAW_URI']} {env['SERVER_PROTOCOL']}"

    def _user(self) -> str:
        auth = self._environ.get("HTTP_AUTHORIZATION", "")
        if auth[:6].lower() != "basic ":
            return "-"
        try:
            user = base64.b64decode(auth[6:].strip()).decode("utf-8").partition(":")[0]
        except (binascii.Error, ValueError):
            return "-"
        return user or "-"

    def _microseconds(self) -> int:
        return int(self._duration * 1_000_000)


# The request headers the environ keeps without an HTTP_ prefix.
_REQUEST_HEADER_KEYS = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def _request_header_names(environ: Mapping[str, Any]) -> Iterator[str]:
    for key in environ:
        if key.startswith("HTTP_"):
            yield key[5:].lower().replace("_", "-")
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            yield key.lower().replace("_", "-")


# gunicorn's own atoms, each with the value (and type) gunicorn gives it.
_ATOMS: dict[str, Callable[[AccessAtoms], Any]] = {
    "h": lambda a: a._environ.get("REMOTE_ADDR", "-"),
    "l": lambda a: "-",
    "u": AccessAtoms._user,
    "t": lambda a: time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
    "r": AccessAtoms._request_line,
    "s": lambda a: a._status.split(None, 1)[0] if a._status else "-",
    "m": lambda a: a._environ.get("REQUEST_METHOD"),
    "U": lambda a: a._environ.get("PATH_INFO"),
    "q": lambda a: a._environ.get("QUERY_STRING"),
    "H": lambda a: a._environ.get("SERVER_PROTOCOL"),
    "b": lambda a: str(a._body_bytes),
    "B": lambda a: a._body_bytes,
    "f": lambda a: a._environ.get("HTTP_REFERER", "-"),
    "a": lambda a: a._environ.get("HTTP_USER_AGENT", "-"),
    "T": lambda a: int(a._duration),
    "D": AccessAtoms._microseconds,
    "M": lambda a: a._microseconds() // 1000,
    "L": lambda a: "{}.{:06d}".format(*divmod(a._microseconds(), 1_000_000)),
    "p": lambda a: f"<{os.getpid()}>",
}


class AccessLogger:
    """Logs one record per finished exchange on ``gunicorn.access``, as gunicorn's logger does."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    @property
    def enabled(self) -> bool:
        # A handler of its own, or the root's when the logger propagates (a
        # logging config laid over gunicorn's defaults can leave it so).
        return not access_log.disabled and access_log.hasHandlers()

    def log(self, exchange: Exchange) -> None:
        # The format was checked against gunicorn's atoms with the configuration;
        # the handler formats it (record.getMessage()) only if it writes the line.
        access_log.info(self.fmt, AccessAtoms(exchange.environ, exchange.status,
                                              exchange.response_headers, exchange.sent,
                                              exchange.duration))
